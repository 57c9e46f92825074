//! The evaluation loop: every `interval`, each rule's value is read (counts from the
//! metrics, health values from the registry), its alert takes the step, and each of its
//! channels is offered the notice that is due, if any, without waiting (a full queue is
//! retried at the next evaluation). Deliveries come back as outcomes: only then is a notice
//! recorded as sent, in memory and in the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::channels::{Notice, Outcome, Status};
use super::history::HistoryEntry;
use super::rule::{Condition, Rule};
use super::state::{Due, Phase};
use super::{group_record, Alerts, GROUP, STATE};
use crate::config::format_duration;
use crate::event::timefmt::format_rfc3339_ms;
use crate::telemetry;

/// Runs until `stop` changes.
pub(super) async fn run(
    alerts: Arc<Alerts>,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(alerts.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => alerts.evaluate().await,
            Some(outcome) = outcomes.recv() => alerts.record_outcome(outcome).await,
            _ = stop.changed() => return,
        }
    }
}

/// Logs a failure to keep alerting's records; evaluation goes on (what was not kept is
/// written again at its next change).
fn log_store_failure(what: &str, err: &anyhow::Error) {
    tracing::warn!(error = %format!("{err:#}"), "alerting could not keep {what} in the store");
}

impl Alerts {
    /// The value of `rule` now; `None` when it cannot be read (logged).
    async fn value_of(&self, rule: &Rule, failing_channels: usize) -> Option<f64> {
        match rule.condition {
            Condition::Health(check) => Some(self.signals.value(check, failing_channels).await),
            _ => match self
                .metrics
                .count_matching(rule.window, rule.kind.as_deref(), rule.service.as_deref())
                .await
            {
                Ok(count) => Some(count as f64),
                Err(err) => {
                    tracing::warn!(rule = %rule.name, error = %format!("{err:#}"), "an alert rule could not be evaluated");
                    None
                }
            },
        }
    }

    /// Whether this process evaluates now: always alone on its store; in a cluster, only
    /// the leader, after reading what the others changed (and, on taking the lead, what the
    /// last leader sent).
    async fn take_turn(&self) -> bool {
        let leading = match self.store.lead_alerts().await {
            Ok(leading) => leading,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot tell whether this process leads alerting; not evaluating");
                false
            }
        };
        let was = self.leading.swap(leading, Ordering::Relaxed);
        if leading != was && self.shared {
            if leading {
                tracing::info!("this process now leads alerting: it evaluates and notifies");
            } else {
                tracing::info!("this process no longer leads alerting");
            }
        }
        if self.shared {
            // A follower shows the leader's states; a new leader takes them, and what was sent.
            let taking_over = leading && !was;
            if let Err(err) = self.reload(!leading || taking_over, taking_over).await {
                tracing::warn!(error = %format!("{err:#}"), "alerting could not read the store");
                return false;
            }
        }
        leading
    }

    /// One evaluation of every rule.
    pub(super) async fn evaluate(&self) {
        if !self.take_turn().await {
            return;
        }
        let rules: Vec<Arc<Rule>> = self.inner.lock().unwrap().rules.values().cloned().collect();
        let failing_channels = self
            .channels
            .values()
            .filter(|channel| channel.is_failing())
            .count();
        let mut values = Vec::with_capacity(rules.len());
        for rule in rules {
            if let Some(value) = self.value_of(&rule, failing_channels).await {
                values.push((rule, value));
            }
        }
        let now = self.clock.now_ms();
        let mut states = Vec::new();
        let mut history = Vec::new();
        let mut groups = Vec::new();
        let mut notices = Vec::new();
        let mut by_phase = [0u64; 3];
        {
            let mut inner = self.inner.lock().unwrap();
            let inner = &mut *inner;
            for (rule, value) in &values {
                // A rule deleted meanwhile is not brought back.
                if !inner.rules.contains_key(&rule.name) {
                    continue;
                }
                let state = inner.states.entry(rule.name.clone()).or_default();
                let holds = rule.condition.holds(*value);
                if let Some(change) =
                    state.step(now, holds, *value, rule.for_, rule.keep_firing_for)
                {
                    history.push(HistoryEntry {
                        id: 0,
                        at: format_rfc3339_ms(now),
                        rule: rule.name.clone(),
                        event: change.name().to_owned(),
                        channel: None,
                        status: None,
                        value: Some(*value),
                        error: None,
                    });
                    states.push((rule.name.clone(), state.clone()));
                }
                by_phase[state.phase as usize] += 1;
                let state = state.clone();
                let labels = rule.alert_labels();
                let silenced = inner
                    .silences
                    .iter()
                    .any(|silence| silence.active(now) && silence.matches(&labels));
                for channel in &rule.channels {
                    let Some(config) = self.channel_configs.get(channel) else {
                        continue;
                    };
                    let key = (channel.clone(), rule.name.clone());
                    if inner.in_flight.contains(&key) {
                        continue;
                    }
                    let timing = rule.timing.over(config.timing).unwrap_or(config.timing);
                    let log = inner.groups.entry(key.clone()).or_default();
                    match log.due(&state, &timing, now, silenced) {
                        Due::Nothing => {}
                        Due::SkipResolved => {
                            log.delivered(Due::SkipResolved, state.starts_at_ms, now);
                            groups.push((key.clone(), log.clone()));
                            history.push(HistoryEntry {
                                id: 0,
                                at: format_rfc3339_ms(now),
                                rule: rule.name.clone(),
                                event: "not_sent".to_owned(),
                                channel: Some(channel.clone()),
                                status: Some("resolved".to_owned()),
                                value: Some(*value),
                                error: None,
                            });
                        }
                        due => {
                            inner.in_flight.insert(key);
                            notices.push(self.notice(rule, channel, &state, due, labels.clone()));
                        }
                    }
                }
            }
        }
        telemetry::alerts_by_state(by_phase[0], by_phase[1], by_phase[2]);
        for notice in notices {
            let key = (notice.channel.clone(), notice.rule.clone());
            let offered = self
                .channels
                .get(&notice.channel)
                .is_some_and(|channel| channel.offer(notice));
            if !offered {
                self.inner.lock().unwrap().in_flight.remove(&key);
            }
        }
        for (name, state) in states {
            if let Err(err) = self.save(STATE, &name, &state).await {
                log_store_failure("an alert's state", &err);
            }
        }
        for ((channel, rule), log) in groups {
            if let Err(err) = self.save(GROUP, &group_record(&channel, &rule), &log).await {
                log_store_failure("a notification log", &err);
            }
        }
        self.add_history(now, history).await;
    }

    fn notice(
        &self,
        rule: &Rule,
        channel: &str,
        state: &super::state::AlertState,
        due: Due,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Notice {
        let firing = state.phase == Phase::Firing;
        Notice {
            channel: channel.to_owned(),
            rule: rule.name.clone(),
            status: if firing {
                Status::Firing
            } else {
                Status::Resolved
            },
            labels,
            annotations: rule.annotations.clone(),
            starts_at_ms: state.starts_at_ms.unwrap_or(state.since_ms),
            ends_at_ms: if firing { None } else { state.ends_at_ms },
            value: state.value,
            threshold: rule.condition.threshold(),
            window: format_duration(rule.window),
            description: rule.describe(),
            external_url: self.public_url.clone(),
            due,
        }
    }

    /// Takes what became of a notice: recorded as sent once delivered.
    pub(super) async fn record_outcome(&self, outcome: Outcome) {
        let notice = outcome.notice;
        let key = (notice.channel.clone(), notice.rule.clone());
        let now = self.clock.now_ms();
        let log = {
            let mut inner = self.inner.lock().unwrap();
            inner.in_flight.remove(&key);
            match &outcome.result {
                Ok(()) if inner.rules.contains_key(&notice.rule) => {
                    let log = inner.groups.entry(key.clone()).or_default();
                    log.delivered(notice.due, Some(notice.starts_at_ms), now);
                    Some(log.clone())
                }
                _ => None,
            }
        };
        if let Some(log) = log {
            if let Err(err) = self.save(GROUP, &group_record(&key.0, &key.1), &log).await {
                log_store_failure("a notification log", &err);
            }
        }
        let entry = HistoryEntry {
            id: 0,
            at: format_rfc3339_ms(now),
            rule: notice.rule.clone(),
            event: if outcome.result.is_ok() {
                "notified"
            } else {
                "notify_failed"
            }
            .to_owned(),
            channel: Some(notice.channel.clone()),
            status: Some(notice.status.name().to_owned()),
            value: notice.value,
            error: outcome.result.err().map(|err| err.to_string()),
        };
        self.add_history(now, vec![entry]).await;
    }

    async fn save<T: serde::Serialize>(
        &self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> anyhow::Result<()> {
        let body = serde_json::to_string(value)?;
        self.store.put_alert_record(kind, name, &body).await
    }

    /// Adds `entries`, all of `at_ms`, to the history.
    async fn add_history(&self, at_ms: i64, entries: Vec<HistoryEntry>) {
        if entries.is_empty() {
            return;
        }
        let rows = entries
            .iter()
            .filter_map(|entry| Some((at_ms, serde_json::to_string(entry).ok()?)))
            .collect();
        if let Err(err) = self.store.add_alert_history(rows).await {
            log_store_failure("the alerts' history", &err);
        }
    }
}
