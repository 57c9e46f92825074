//! How alerts are grouped into notices and when a group's notices go out: the grouping
//! settings (`group_by`, `group_wait`, `group_interval`, `repeat_interval`, `send_resolved`)
//! a channel gives and a rule may override.

use std::collections::BTreeMap;

use std::time::Duration;

use crate::config::parse_duration;

/// The grouping settings a channel or a rule may give; a rule's win over its channel's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimingSpec {
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    pub send_resolved: Option<bool>,
    pub group_by: Option<Vec<String>>,
}

/// `group_by = ["..."]`: every label, so that each alert is a group of its own.
pub const GROUP_BY_ALL: &str = "...";

/// How alerts are grouped and when a group's notices go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// The labels whose values make a group (Alertmanager's `group_by`): alerts of one
    /// channel sharing them go out in one notice. Default `["alertname"]`, one group per
    /// rule; `[]` puts every alert of the channel in one group, `["..."]` each in its own.
    pub group_by: Vec<String>,
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
            group_by: vec!["alertname".to_owned()],
        }
    }
}

/// Whether `name` may be a label name of `group_by` (Prometheus': a letter or `_`, then
/// letters, digits or `_`).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a `group_by` list: label names, no repeats, or `["..."]` alone.
fn check_group_by(labels: &[String]) -> Result<(), String> {
    if labels.iter().any(|label| label == GROUP_BY_ALL) {
        if labels.len() > 1 {
            return Err(format!(
                "group_by: \"{GROUP_BY_ALL}\" (every label) stands alone"
            ));
        }
        return Ok(());
    }
    for (i, label) in labels.iter().enumerate() {
        if !is_label_name(label) {
            return Err(format!(
                "group_by: '{label}' is not a label name (a letter or '_', then letters, \
                 digits or '_')"
            ));
        }
        if labels[..i].contains(label) {
            return Err(format!("group_by: '{label}' is named twice"));
        }
    }
    Ok(())
}

impl Timing {
    /// The group an alert with `labels` belongs to: its key (Alertmanager's `groupKey`,
    /// `{}:{team="checkout"}`) and its group labels (those of `group_by` it has).
    pub fn group_of(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> (String, BTreeMap<String, String>) {
        let group_labels: BTreeMap<String, String> =
            if self.group_by.iter().any(|l| l == GROUP_BY_ALL) {
                labels.clone()
            } else {
                self.group_by
                    .iter()
                    .filter_map(|name| Some((name.clone(), labels.get(name)?.clone())))
                    .collect()
            };
        let inner: Vec<String> = group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        (format!("{{}}:{{{}}}", inner.join(",")), group_labels)
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
            group_by: match &self.group_by {
                None => base.group_by,
                Some(labels) => {
                    check_group_by(labels)?;
                    labels.clone()
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn groups_are_keyed_by_the_group_by_labels() {
        let alert = labels(&[("alertname", "a"), ("team", "checkout")]);
        let by = |group_by: &[&str]| Timing {
            group_by: group_by.iter().map(|l| l.to_string()).collect(),
            ..Timing::default()
        };
        assert_eq!(Timing::default().group_of(&alert).0, "{}:{alertname=\"a\"}");
        let (key, group) = by(&["team", "zone"]).group_of(&alert);
        assert_eq!(key, "{}:{team=\"checkout\"}");
        assert_eq!(group, labels(&[("team", "checkout")]));
        assert_eq!(by(&[]).group_of(&alert).0, "{}:{}");
        assert_eq!(by(&["..."]).group_of(&alert).1, alert);
    }

    #[test]
    fn group_by_names_labels() {
        let spec = |labels: &[&str]| TimingSpec {
            group_by: Some(labels.iter().map(|l| l.to_string()).collect()),
            ..TimingSpec::default()
        };
        assert!(spec(&["team", "alertname"]).over(Timing::default()).is_ok());
        assert!(spec(&["..."]).over(Timing::default()).is_ok());
        for bad in [&["te am"][..], &["team", "team"], &["...", "team"], &[""]] {
            let err = spec(bad).over(Timing::default()).unwrap_err();
            assert!(err.starts_with("group_by:"), "{err}");
        }
    }
}
