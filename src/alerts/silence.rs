//! Silences: while one is active, alerts whose labels match all its matchers are not
//! announced (a firing is announced once the silence ends if it still fires).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A label that must have a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// A label: `alertname`, `type`, `service`, or one of the rule's.
    pub name: String,
    /// Its value, exactly.
    pub value: String,
}

/// A silence as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub comment: String,
    /// The key's id that made it, if any.
    pub created_by: Option<String>,
}

impl Silence {
    pub fn active(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|matcher| labels.get(&matcher.name) == Some(&matcher.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_matches_every_matcher_while_active() {
        let silence = Silence {
            id: "s".to_owned(),
            matchers: vec![Matcher {
                name: "alertname".to_owned(),
                value: "a".to_owned(),
            }],
            starts_at_ms: 10,
            ends_at_ms: 20,
            comment: String::new(),
            created_by: None,
        };
        let labels = BTreeMap::from([("alertname".to_owned(), "a".to_owned())]);
        assert!(silence.matches(&labels) && silence.active(10) && !silence.active(20));
        assert!(!silence.matches(&BTreeMap::new()));
    }
}
