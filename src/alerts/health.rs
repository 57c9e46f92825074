//! The service's own conditions as rules, on by default and sent to the log unless the file
//! routes them elsewhere: not ready for 30 s, a backlog at 90% or more for a minute, a failed
//! retention run, dead letters added, a channel failing to deliver. Their values are read
//! from the health registry, the queue and the channels' counters: nothing is scanned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::rule::{Condition, HealthCheck, Origin, Rule};
use crate::health::Health;
use crate::queue::redis::RedisStream;
use crate::queue::Ingest;

/// The built-in rules, sent to `channels`.
pub fn rules(channels: &[String]) -> Vec<Rule> {
    let rule = |name: &str, check: HealthCheck, for_: u64| Rule {
        name: name.to_owned(),
        kind: None,
        service: None,
        window: Duration::from_secs(1),
        condition: Condition::Health(check),
        for_: Duration::from_secs(for_),
        keep_firing_for: Duration::ZERO,
        channels: channels.to_vec(),
        labels: [("severity".to_owned(), "critical".to_owned())].into(),
        annotations: [("summary".to_owned(), check.describe().to_owned())].into(),
        timing: Default::default(),
        origin: Origin::Builtin,
    };
    vec![
        rule("eventide-not-ready", HealthCheck::NotReady, 30),
        rule("eventide-backlog", HealthCheck::Backlog, 60),
        rule("eventide-retention-failed", HealthCheck::RetentionFailed, 0),
        rule("eventide-dead-letters", HealthCheck::DeadLetters, 0),
        rule("eventide-channel-failing", HealthCheck::ChannelFailing, 0),
    ]
}

/// Where the health rules read their values.
pub struct Signals {
    pub health: Arc<Health>,
    /// The ingest path (pending events and the queue's backlog).
    pub ingest: Option<Ingest>,
    /// A cluster's queue, for its dead letters.
    pub dead_letters: Option<RedisStream>,
    /// Dead letters at the last evaluation (`u64::MAX`: not read yet).
    last_dead_letters: AtomicU64,
}

impl Signals {
    pub fn new(
        health: Arc<Health>,
        ingest: Option<Ingest>,
        dead_letters: Option<RedisStream>,
    ) -> Signals {
        Signals {
            health,
            ingest,
            dead_letters,
            last_dead_letters: AtomicU64::new(u64::MAX),
        }
    }

    /// The value of `check` now; `failing_channels` from the channels' counters.
    pub async fn value(&self, check: HealthCheck, failing_channels: usize) -> f64 {
        match check {
            HealthCheck::NotReady => self.health.not_ready_reasons().len() as f64,
            HealthCheck::Backlog => {
                let Some(ingest) = &self.ingest else {
                    return 0.0;
                };
                let (pending, max_pending) = ingest.pending();
                let backlog = ingest.backlog();
                let ratio = |part: u64, whole: u64| {
                    if whole == 0 {
                        0.0
                    } else {
                        part as f64 * 100.0 / whole as f64
                    }
                };
                ratio(pending, max_pending).max(ratio(backlog.events, backlog.max))
            }
            HealthCheck::RetentionFailed => {
                let failing = self.health.components().iter().any(|component| {
                    let state = component.state();
                    state.name == "retention" && state.failing
                });
                f64::from(u8::from(failing))
            }
            HealthCheck::DeadLetters => {
                let Some(stream) = &self.dead_letters else {
                    return 0.0;
                };
                let Ok(now) = stream.dead_letter_count().await else {
                    return 0.0;
                };
                let before = self.last_dead_letters.swap(now, Ordering::Relaxed);
                if before == u64::MAX {
                    0.0
                } else {
                    now.saturating_sub(before) as f64
                }
            }
            HealthCheck::ChannelFailing => failing_channels as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Readiness;

    #[tokio::test]
    async fn values_come_from_the_health_registry() {
        let health = Arc::new(Health::new(None));
        let store = health.register(
            "store",
            "the store does not accept writes",
            Readiness::Required,
        );
        let retention = health.register("retention", "retention failed", Readiness::Informative);
        let signals = Signals::new(health, None, None);
        assert_eq!(signals.value(HealthCheck::NotReady, 0).await, 0.0);
        assert_eq!(signals.value(HealthCheck::RetentionFailed, 0).await, 0.0);
        store.failed("disk full".into());
        retention.failed("locked".into());
        assert_eq!(signals.value(HealthCheck::NotReady, 0).await, 1.0);
        assert_eq!(signals.value(HealthCheck::RetentionFailed, 0).await, 1.0);
        assert_eq!(signals.value(HealthCheck::ChannelFailing, 2).await, 2.0);
        assert_eq!(signals.value(HealthCheck::DeadLetters, 0).await, 0.0);
    }

    #[test]
    fn the_built_in_rules_wait_as_the_issue_says() {
        let rules = rules(&["log".to_owned()]);
        let for_of = |name: &str| rules.iter().find(|rule| rule.name == name).unwrap().for_;
        assert_eq!(for_of("eventide-not-ready"), Duration::from_secs(30));
        assert_eq!(for_of("eventide-backlog"), Duration::from_secs(60));
        assert_eq!(for_of("eventide-dead-letters"), Duration::ZERO);
        assert!(HealthCheck::Backlog.holds(90.0) && !HealthCheck::Backlog.holds(89.9));
        assert!(rules.iter().all(|rule| rule.channels == ["log"]));
    }
}
