//! The evaluation loop: every `interval`, each rule's value is read (counts from the
//! metrics, health values from the registry), its alert takes the step, and its alert joins,
//! on each of its channels, the group of the alerts sharing the values of the `group_by`
//! labels; each group with something due is offered as one notice, without waiting (a full
//! queue is retried at the next evaluation). Deliveries come back as outcomes: only then is
//! a notice recorded as sent, for each of its alerts, in memory and in the store.
//!
//! What was announced is kept per channel and alert (a [`GroupLog`] each), so a group is
//! what its alerts' logs say: it sends when one of them is due (a new firing, once
//! `group_wait` passed and, if the group already announced others, `group_interval` since
//! its last notice; a repeat; a resolve), and its notice carries every alert of the group
//! firing (unless silenced) and those whose end is due.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::channels::{AlertNotice, Notice, Outcome, Status};
use super::history::HistoryEntry;
use super::rule::{Condition, Rule};
use super::state::{at_or_after, AlertState, Due, GroupLog, Phase};
use super::timing::Timing;
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
        let mut logs = Vec::new();
        // By (channel, group key), in the order of their keys.
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
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
                    let timing = rule
                        .timing
                        .over(config.timing.clone())
                        .unwrap_or_else(|_| config.timing.clone());
                    let (group_key, group_labels) = timing.group_of(&labels);
                    let key = (channel.clone(), group_key);
                    if inner.in_flight.contains(&key) {
                        continue;
                    }
                    let log = inner
                        .groups
                        .entry((channel.clone(), rule.name.clone()))
                        .or_default();
                    let due = log.due(&state, &timing, now, silenced);
                    if due == Due::SkipResolved {
                        log.delivered(Due::SkipResolved, state.starts_at_ms, now);
                        logs.push(((channel.clone(), rule.name.clone()), log.clone()));
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
                        continue;
                    }
                    let firing = state.phase == Phase::Firing && !silenced;
                    if due == Due::Nothing && !firing {
                        continue;
                    }
                    groups
                        .entry(key)
                        .or_insert_with(|| Group {
                            timing,
                            labels: group_labels,
                            members: Vec::new(),
                        })
                        .members
                        .push(Member {
                            rule: rule.clone(),
                            state: state.clone(),
                            labels: labels.clone(),
                            due,
                            log: log.clone(),
                        });
                }
            }
            groups.retain(|_, group| group.sends(now));
            inner.in_flight.extend(groups.keys().cloned());
        }
        telemetry::alerts_by_state(by_phase[0], by_phase[1], by_phase[2]);
        for ((channel, group_key), group) in groups {
            let notice = self.notice(&channel, group_key, group);
            let key = (notice.channel.clone(), notice.group_key.clone());
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
        for ((channel, rule), log) in logs {
            if let Err(err) = self.save(GROUP, &group_record(&channel, &rule), &log).await {
                log_store_failure("a notification log", &err);
            }
        }
        self.add_history(now, history).await;
    }

    /// The notice of `group` to `channel`.
    fn notice(&self, channel: &str, group_key: String, group: Group) -> Notice {
        let alerts: Vec<AlertNotice> = group
            .members
            .into_iter()
            .map(|member| {
                let state = &member.state;
                let firing = state.phase == Phase::Firing;
                let announced = firing && member.log.announced_starts_at_ms == state.starts_at_ms;
                let rule = &member.rule;
                AlertNotice {
                    rule: rule.name.clone(),
                    status: if firing {
                        Status::Firing
                    } else {
                        Status::Resolved
                    },
                    labels: member.labels,
                    annotations: rule.annotations.clone(),
                    starts_at_ms: state.starts_at_ms.unwrap_or(state.since_ms),
                    ends_at_ms: if firing { None } else { state.ends_at_ms },
                    value: state.value,
                    threshold: rule.condition.threshold(),
                    window: format_duration(rule.window),
                    description: rule.describe(),
                    // Alerts carried along are recorded as announced with the others.
                    due: match member.due {
                        Due::Nothing if announced => Due::Repeat,
                        Due::Nothing => Due::Firing,
                        due => due,
                    },
                }
            })
            .collect();
        let status = if alerts.iter().any(|alert| alert.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        };
        Notice {
            channel: channel.to_owned(),
            group_key,
            group_labels: group.labels,
            status,
            alerts,
            external_url: self.public_url.clone(),
        }
    }

    /// Takes what became of a notice: recorded as sent, for each of its alerts, once
    /// delivered.
    pub(super) async fn record_outcome(&self, outcome: Outcome) {
        let notice = outcome.notice;
        let now = self.clock.now_ms();
        let logs: Vec<(String, GroupLog)> = {
            let mut inner = self.inner.lock().unwrap();
            let inner = &mut *inner;
            inner
                .in_flight
                .remove(&(notice.channel.clone(), notice.group_key.clone()));
            let mut logs = Vec::new();
            if outcome.result.is_ok() {
                for alert in &notice.alerts {
                    if !inner.rules.contains_key(&alert.rule) {
                        continue;
                    }
                    let log = inner
                        .groups
                        .entry((notice.channel.clone(), alert.rule.clone()))
                        .or_default();
                    log.delivered(alert.due, Some(alert.starts_at_ms), now);
                    logs.push((alert.rule.clone(), log.clone()));
                }
            }
            logs
        };
        for (rule, log) in logs {
            if let Err(err) = self
                .save(GROUP, &group_record(&notice.channel, &rule), &log)
                .await
            {
                log_store_failure("a notification log", &err);
            }
        }
        let error = outcome.result.err().map(|err| err.to_string());
        let entries = notice
            .alerts
            .iter()
            .map(|alert| HistoryEntry {
                id: 0,
                at: format_rfc3339_ms(now),
                rule: alert.rule.clone(),
                event: if error.is_none() {
                    "notified"
                } else {
                    "notify_failed"
                }
                .to_owned(),
                channel: Some(notice.channel.clone()),
                status: Some(alert.status.name().to_owned()),
                value: alert.value,
                error: error.clone(),
            })
            .collect();
        self.add_history(now, entries).await;
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

/// The alerts of one channel sharing the values of the `group_by` labels, at one evaluation.
struct Group {
    /// The first alert's (those of one group share them unless their rules override the
    /// channel's differently).
    timing: Timing,
    labels: BTreeMap<String, String>,
    members: Vec<Member>,
}

/// An alert of a group: one with something due, or one firing carried along.
struct Member {
    rule: Arc<Rule>,
    state: AlertState,
    labels: BTreeMap<String, String>,
    due: Due,
    /// What its channel was told of it.
    log: GroupLog,
}

impl Group {
    /// Whether the group sends a notice at `now_ms`: one of its alerts is due, and a new
    /// firing joining a group that announced others waits `group_interval` from its last
    /// notice (Alertmanager's group timers).
    fn sends(&self, now_ms: i64) -> bool {
        let last_sent = self
            .members
            .iter()
            .filter_map(|member| member.log.last_sent_ms)
            .max();
        let interval_passed =
            last_sent.is_none_or(|last| at_or_after(now_ms, last, self.timing.group_interval));
        let announced = self.members.iter().any(|member| {
            member.state.phase == Phase::Firing
                && member.log.announced_starts_at_ms == member.state.starts_at_ms
        });
        self.members.iter().any(|member| match member.due {
            Due::Repeat | Due::Resolved => true,
            Due::Firing => !announced || interval_passed,
            Due::Nothing | Due::SkipResolved => false,
        })
    }
}
