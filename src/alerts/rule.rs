//! A rule: the count of events of an optional type and/or service over a sliding window,
//! compared with a threshold (`above`, `below`) or with none at all (`absent`); or one of the
//! service's own health conditions. Parsed once from what was written ([`RuleSpec`], from
//! the file or an API body) into [`Rule`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::timing::TimingSpec;
use crate::config::{format_duration, parse_duration};
use crate::metrics::MAX_WINDOW_SECONDS;

/// The most characters a rule's name may have.
const MAX_NAME_CHARS: usize = 100;

/// How the count is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConditionKind {
    /// More than `threshold` events in the window.
    Above,
    /// Fewer than `threshold` events in the window.
    Below,
    /// No event in the window.
    Absent,
    /// One of the service's own conditions (built in, not writable).
    Health,
}

/// A rule as written in the alerts file or sent to `POST /alerts/rules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "checkout-stopped", "type": "checkout", "window": "10m",
    "condition": "absent", "for": "0s", "channels": ["ops"]
}))]
pub struct RuleSpec {
    /// Unique; the `alertname` label of its alerts.
    pub name: String,
    /// Count only events of this type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Count only events of this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The sliding window counted, e.g. `10m` (1s to 24h).
    pub window: String,
    pub condition: ConditionKind,
    /// `above`, `below`: the count compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// How long the condition must hold before the alert fires (default `0s`).
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// How long the alert keeps firing after the condition clears (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Channels notified (default: `log`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Labels added to its alerts (and matched by silences).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of its alerts (`summary`, `description`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Grouping settings for this rule, over its channels': from the alert's firing to the
    /// first notice (channel's default: 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// The labels whose values group alerts into one notice, over its channels' (default
    /// `["alertname"]`: one notice per rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
}

impl RuleSpec {
    /// Its grouping settings.
    pub fn timing(&self) -> TimingSpec {
        TimingSpec {
            group_wait: self.group_wait.clone(),
            group_interval: self.group_interval.clone(),
            repeat_interval: self.repeat_interval.clone(),
            send_resolved: self.send_resolved,
            group_by: self.group_by.clone(),
        }
    }
}

/// Where a rule comes from: only those added over HTTP can be changed over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The alerts file (read-only).
    File,
    /// `POST /alerts/rules`, kept in the store.
    Api,
    /// The service's own health rules (read-only).
    Builtin,
}

/// What a rule compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Above(u64),
    Below(u64),
    Absent,
    Health(HealthCheck),
}

impl Condition {
    /// Whether `value` meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Condition::Above(threshold) => value > threshold as f64,
            Condition::Below(threshold) => value < threshold as f64,
            Condition::Absent => value == 0.0,
            Condition::Health(check) => check.holds(value),
        }
    }

    pub fn threshold(&self) -> Option<u64> {
        match *self {
            Condition::Above(threshold) | Condition::Below(threshold) => Some(threshold),
            _ => None,
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: Option<String>,
    pub service: Option<String>,
    pub window: Duration,
    pub condition: Condition,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub channels: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub timing: TimingSpec,
    pub origin: Origin,
}

fn duration(field: &str, text: Option<&str>) -> Result<Duration, String> {
    match text {
        None => Ok(Duration::ZERO),
        Some(text) => parse_duration(text).map_err(|reason| format!("{field}: {reason}")),
    }
}

/// Whether `name` may name a rule: 1 to 100 characters, no control character, no `/`
/// (it is a path segment of `/alerts/rules/{name}`).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, no control character, no '/', no \
             surrounding spaces"
        ));
    }
    Ok(())
}

impl Rule {
    /// Checks what was written.
    pub fn from_spec(spec: RuleSpec, origin: Origin) -> Result<Rule, String> {
        check_name(&spec.name)?;
        let window = parse_duration(&spec.window).map_err(|reason| format!("window: {reason}"))?;
        if window < Duration::from_secs(1) || window.as_secs() > MAX_WINDOW_SECONDS {
            return Err("window: from 1s to 24h".to_owned());
        }
        if window.subsec_millis() != 0 {
            return Err("window: whole seconds".to_owned());
        }
        let condition = match (spec.condition, spec.threshold) {
            (ConditionKind::Above, Some(threshold)) => Condition::Above(threshold),
            (ConditionKind::Below, Some(threshold)) => Condition::Below(threshold),
            (ConditionKind::Above | ConditionKind::Below, None) => {
                return Err("threshold: required with above and below".to_owned())
            }
            (ConditionKind::Absent, None) => Condition::Absent,
            (ConditionKind::Absent, Some(_)) => {
                return Err("threshold: absent takes none".to_owned())
            }
            (ConditionKind::Health, _) => {
                return Err("condition: above, below or absent".to_owned())
            }
        };
        for (field, value) in [("type", &spec.kind), ("service", &spec.service)] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(format!("{field}: must not be empty when given"));
            }
        }
        // Checked now so that a bad duration is refused here, not at the first notice.
        let timing = spec.timing();
        timing.over(super::timing::Timing::default())?;
        let channels = if spec.channels.is_empty() {
            vec![LOG_CHANNEL.to_owned()]
        } else {
            spec.channels.clone()
        };
        Ok(Rule {
            for_: duration("for", spec.for_.as_deref())?,
            keep_firing_for: duration("keep_firing_for", spec.keep_firing_for.as_deref())?,
            name: spec.name,
            kind: spec.kind,
            service: spec.service,
            window,
            condition,
            channels,
            labels: spec.labels,
            annotations: spec.annotations,
            timing,
            origin,
        })
    }

    /// What was written, again (what `GET /alerts/rules` answers and the store keeps).
    pub fn spec(&self) -> RuleSpec {
        let (condition, threshold) = match self.condition {
            Condition::Above(threshold) => (ConditionKind::Above, Some(threshold)),
            Condition::Below(threshold) => (ConditionKind::Below, Some(threshold)),
            Condition::Absent => (ConditionKind::Absent, None),
            Condition::Health(_) => (ConditionKind::Health, None),
        };
        let written = |value: Duration| (!value.is_zero()).then(|| format_duration(value));
        RuleSpec {
            name: self.name.clone(),
            kind: self.kind.clone(),
            service: self.service.clone(),
            window: format_duration(self.window),
            condition,
            threshold,
            for_: written(self.for_),
            keep_firing_for: written(self.keep_firing_for),
            channels: self.channels.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            group_wait: self.timing.group_wait.clone(),
            group_interval: self.timing.group_interval.clone(),
            repeat_interval: self.timing.repeat_interval.clone(),
            send_resolved: self.timing.send_resolved,
            group_by: self.timing.group_by.clone(),
        }
    }

    /// The labels of its alert: `alertname`, the filters, then its own.
    pub fn alert_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".to_owned(), self.name.clone());
        if let Some(kind) = &self.kind {
            labels.insert("type".to_owned(), kind.clone());
        }
        if let Some(service) = &self.service {
            labels.insert("service".to_owned(), service.clone());
        }
        labels
    }

    /// One line saying what the rule watches: "count of type=checkout over 10m is absent".
    pub fn describe(&self) -> String {
        if let Condition::Health(check) = self.condition {
            return check.describe().to_owned();
        }
        let mut filters = Vec::new();
        if let Some(kind) = &self.kind {
            filters.push(format!("type={kind}"));
        }
        if let Some(service) = &self.service {
            filters.push(format!("service={service}"));
        }
        let what = if filters.is_empty() {
            "events".to_owned()
        } else {
            format!("events with {}", filters.join(", "))
        };
        let window = format_duration(self.window);
        match self.condition {
            Condition::Above(threshold) => format!("{what} over {window} above {threshold}"),
            Condition::Below(threshold) => format!("{what} over {window} below {threshold}"),
            Condition::Absent => format!("no {what} for {window}"),
            Condition::Health(_) => unreachable!(),
        }
    }
}

/// The name of the channel that is always there: the service's log.
pub const LOG_CHANNEL: &str = "log";

/// One of the service's own conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// Value: how many components make the service not ready.
    NotReady,
    /// Value: the fullest of the pending events and the backlog, in percent.
    Backlog,
    /// Value: 1 while the last retention run failed.
    RetentionFailed,
    /// Value: dead letters added since the last evaluation.
    DeadLetters,
    /// Value: how many channels failed their last delivery attempt.
    ChannelFailing,
}

impl HealthCheck {
    pub fn holds(self, value: f64) -> bool {
        match self {
            HealthCheck::Backlog => value >= 90.0,
            _ => value > 0.0,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            HealthCheck::NotReady => "the service is not ready (log, store or queue failing)",
            HealthCheck::Backlog => "the ingest queue or the index backlog is 90% full or more",
            HealthCheck::RetentionFailed => "the last retention run failed",
            HealthCheck::DeadLetters => "events were set aside as dead letters",
            HealthCheck::ChannelFailing => "an alert channel fails to deliver",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(condition: ConditionKind, threshold: Option<u64>) -> RuleSpec {
        RuleSpec {
            name: "r".to_owned(),
            kind: Some("checkout".to_owned()),
            service: None,
            window: "10m".to_owned(),
            condition,
            threshold,
            for_: Some("1m".to_owned()),
            keep_firing_for: None,
            channels: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            group_wait: None,
            group_interval: None,
            repeat_interval: None,
            send_resolved: None,
            group_by: None,
        }
    }

    #[test]
    fn conditions_compare_counts() {
        let above = Rule::from_spec(spec(ConditionKind::Above, Some(100)), Origin::Api).unwrap();
        assert!(above.condition.holds(101.0) && !above.condition.holds(100.0));
        let below = Rule::from_spec(spec(ConditionKind::Below, Some(5)), Origin::Api).unwrap();
        assert!(below.condition.holds(4.0) && !below.condition.holds(5.0));
        let absent = Rule::from_spec(spec(ConditionKind::Absent, None), Origin::Api).unwrap();
        assert!(absent.condition.holds(0.0) && !absent.condition.holds(1.0));
        assert_eq!(absent.channels, [LOG_CHANNEL]);
        assert_eq!(absent.spec().for_.as_deref(), Some("1m"));
    }

    #[test]
    fn bad_rules_are_refused_saying_why() {
        for (spec, want) in [
            (spec(ConditionKind::Above, None), "threshold"),
            (spec(ConditionKind::Absent, Some(1)), "threshold"),
            (
                RuleSpec {
                    window: "2d".to_owned(),
                    ..spec(ConditionKind::Absent, None)
                },
                "window",
            ),
            (
                RuleSpec {
                    name: "a/b".to_owned(),
                    ..spec(ConditionKind::Absent, None)
                },
                "name",
            ),
            (
                RuleSpec {
                    for_: Some("soon".to_owned()),
                    ..spec(ConditionKind::Absent, None)
                },
                "for",
            ),
        ] {
            let err = Rule::from_spec(spec, Origin::Api).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
