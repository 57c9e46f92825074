//! When a group's notices go out: the grouping settings (`group_wait`, `group_interval`,
//! `repeat_interval`, `send_resolved`) a channel gives and a rule may override.

use std::time::Duration;

use crate::config::parse_duration;

/// The grouping settings a channel or a rule may give; a rule's win over its channel's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimingSpec {
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    pub send_resolved: Option<bool>,
}

/// When a group's notices go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From an alert's firing to the first notice.
    pub group_wait: Duration,
    /// From a notice to the next one announcing a change (the resolve).
    pub group_interval: Duration,
    /// From a notice to its repetition while nothing changed.
    pub repeat_interval: Duration,
    pub send_resolved: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
        }
    }
}

impl TimingSpec {
    /// `base` with what this gives instead.
    pub fn over(&self, base: Timing) -> Result<Timing, String> {
        let duration = |field: &str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|reason| format!("{field}: {reason}")),
        };
        Ok(Timing {
            group_wait: duration("group_wait", &self.group_wait, base.group_wait)?,
            group_interval: duration("group_interval", &self.group_interval, base.group_interval)?,
            repeat_interval: duration(
                "repeat_interval",
                &self.repeat_interval,
                base.repeat_interval,
            )?,
            send_resolved: self.send_resolved.unwrap_or(base.send_resolved),
        })
    }
}
