//! Where notices go: every kind of receiver behind one trait ([`AlertChannel`]: the log, a
//! webhook, Slack, email), each fed by a bounded queue and a task of its own that retries
//! with backoff, so a slow or dead receiver never holds up evaluation, ingestion or another
//! channel. Outcomes go back to the evaluator, which records a notice as sent only once it
//! was delivered (and keeps that in the store).

mod email;
mod log;
mod slack;
mod webhook;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::config::{Channel, Target};
use super::state::Due;
use crate::telemetry;

/// Whether a notice announces a firing or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One notice: the alerts of one group (those sharing the values of the `group_by`
/// labels), to one channel.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The channel (the webhook's `receiver`).
    pub channel: String,
    /// Alertmanager's `groupKey`: `{}:{alertname="checkout-stopped"}`.
    pub group_key: String,
    /// The `group_by` labels and their values.
    pub group_labels: BTreeMap<String, String>,
    /// Firing while one of its alerts fires.
    pub status: Status,
    /// At least one, ordered by rule name.
    pub alerts: Vec<AlertNotice>,
    /// The dashboard's public address, if configured.
    pub external_url: Option<String>,
}

/// One alert of a notice: one rule's.
#[derive(Debug, Clone)]
pub struct AlertNotice {
    pub rule: String,
    pub status: Status,
    /// `alertname` and the rule's filters and labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: i64,
    pub ends_at_ms: Option<i64>,
    /// The value observed (the count, or the health value).
    pub value: Option<f64>,
    pub threshold: Option<u64>,
    /// The rule's window, written as in the rule (`10m`).
    pub window: String,
    /// What the rule watches, in words.
    pub description: String,
    /// What the evaluator records for this alert once the notice is delivered.
    pub due: Due,
}

/// The pairs `maps` all have alike (the webhook's `commonLabels`, `commonAnnotations`).
fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut shared = maps.next().cloned().unwrap_or_default();
    for map in maps {
        shared.retain(|name, value| map.get(name) == Some(value));
    }
    shared
}

impl Notice {
    /// The labels every alert of the notice has alike.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|alert| &alert.labels))
    }

    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts.iter().map(|alert| &alert.annotations))
    }

    /// The notice's title: its alert's ("[FIRING] checkout-stopped: no events with
    /// type=checkout for 10m (value 0)"), or for several, how many fire and the group
    /// ("[FIRING:2] team=checkout: checkout-stopped, payments-stopped").
    pub fn title(&self) -> String {
        if let [alert] = &self.alerts[..] {
            return alert.title();
        }
        let firing = self
            .alerts
            .iter()
            .filter(|alert| alert.status == Status::Firing)
            .count();
        let group: Vec<String> = self
            .group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let rules: Vec<&str> = self
            .alerts
            .iter()
            .map(|alert| alert.rule.as_str())
            .collect();
        format!(
            "[{}:{firing}] {}: {}",
            self.status.name().to_uppercase(),
            group.join(" "),
            rules.join(", ")
        )
    }
}

impl AlertNotice {
    /// 16 hex digits identifying the alert by its labels (as Alertmanager's fingerprint).
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for (name, value) in &self.labels {
            hash.update(name.as_bytes());
            hash.update([0xff]);
            hash.update(value.as_bytes());
            hash.update([0xff]);
        }
        hex(&hash.finalize()[..8])
    }

    /// "[FIRING] checkout-stopped: no events with type=checkout for 10m (value 0)".
    pub fn title(&self) -> String {
        let value = self
            .value
            .map(|value| format!(" (value {value})"))
            .unwrap_or_default();
        format!(
            "[{}] {}: {}{value}",
            self.status.name().to_uppercase(),
            self.rule,
            self.description
        )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Why a delivery failed. Never holds a secret: URLs are left out of HTTP errors.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// A receiver of notices.
#[async_trait]
pub trait AlertChannel: Send + Sync + 'static {
    /// Delivers one notice; an error is retried with backoff.
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError>;
}

/// What became of a notice, for the evaluator.
#[derive(Debug)]
pub struct Outcome {
    pub notice: Notice,
    /// `Err`: given up after retrying for [`GIVE_UP_AFTER`], or stopped.
    pub result: Result<(), DeliveryError>,
}

/// A notice still failing after this long is given up; the evaluator offers it again.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A channel's counters, for Prometheus, `/health/detailed` and the health rule.
#[derive(Default)]
pub struct ChannelStats {
    pub sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Attempts failed in a row (0: the last one succeeded).
    pub failing: AtomicU64,
    /// Notices refused because the queue was full.
    pub dropped: AtomicU64,
    /// The last failure (never a secret).
    pub last_error: Mutex<Option<String>>,
}

/// The sending side of a running channel.
pub struct ChannelHandle {
    pub name: String,
    pub kind: &'static str,
    queue: mpsc::Sender<Notice>,
    pub stats: Arc<ChannelStats>,
}

impl ChannelHandle {
    /// Queues `notice` without waiting; `false` (counted) when the queue is full.
    pub fn offer(&self, notice: Notice) -> bool {
        match self.queue.try_send(notice) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                telemetry::alert_notification(&self.name, "dropped");
                false
            }
        }
    }

    pub fn is_failing(&self) -> bool {
        self.stats.failing.load(Ordering::Relaxed) > 0
    }
}

/// Builds the channel `config` describes and starts its task; outcomes go to `outcomes`.
pub fn start(
    config: &Channel,
    outcomes: mpsc::UnboundedSender<Outcome>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ChannelHandle> {
    let (channel, kind): (Arc<dyn AlertChannel>, &'static str) = match &config.target {
        Target::Log => (Arc::new(log::LogChannel), "log"),
        Target::Webhook { url, secret } => (
            Arc::new(webhook::WebhookChannel::new(
                url.clone(),
                secret.clone(),
                config.timeout,
            )?),
            "webhook",
        ),
        Target::Slack { url } => (
            Arc::new(slack::SlackChannel::new(url.clone(), config.timeout)?),
            "slack",
        ),
        Target::Email(target) => (
            Arc::new(email::EmailChannel::new(target, config.timeout)?),
            "email",
        ),
    };
    let (queue, notices) = mpsc::channel(config.queue);
    let stats = Arc::new(ChannelStats::default());
    tokio::spawn(run(
        channel,
        config.name.clone(),
        config.max_backoff,
        notices,
        outcomes,
        stats.clone(),
        stop,
    ));
    Ok(ChannelHandle {
        name: config.name.clone(),
        kind,
        queue,
        stats,
    })
}

/// Delivers the queued notices one by one, each retried until delivered or given up.
async fn run(
    channel: Arc<dyn AlertChannel>,
    name: String,
    max_backoff: Duration,
    mut notices: mpsc::Receiver<Notice>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    stats: Arc<ChannelStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let next = tokio::select! {
            notice = notices.recv() => notice,
            _ = stop.changed() => None,
        };
        let Some(notice) = next else {
            return;
        };
        let started = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let result = loop {
            match channel.deliver(&notice).await {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    stats.failing.store(0, Ordering::Relaxed);
                    telemetry::alert_notification(&name, "sent");
                    break Ok(());
                }
                Err(err) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    let first = stats.failing.fetch_add(1, Ordering::Relaxed) == 0;
                    telemetry::alert_notification(&name, "failed");
                    if first {
                        tracing::warn!(channel = %name, group = %notice.group_key, error = %err, "alert notice not delivered; retrying");
                    }
                    *stats.last_error.lock().unwrap() = Some(err.to_string());
                    if started.elapsed() >= GIVE_UP_AFTER {
                        break Err(err);
                    }
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = stop.changed() => true,
                    };
                    if stopped {
                        break Err(err);
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        };
        if outcomes.send(Outcome { notice, result }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, status: Status) -> AlertNotice {
        AlertNotice {
            rule: rule.to_owned(),
            status,
            labels: [("alertname", rule), ("team", "checkout")]
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .into(),
            annotations: BTreeMap::new(),
            starts_at_ms: 0,
            ends_at_ms: None,
            value: Some(0.0),
            threshold: None,
            window: "1m".to_owned(),
            description: "no events for 1m".to_owned(),
            due: Due::Firing,
        }
    }

    #[test]
    fn a_notice_of_several_alerts_is_titled_by_its_group() {
        let mut notice = Notice {
            channel: "ops".to_owned(),
            group_key: "{}:{team=\"checkout\"}".to_owned(),
            group_labels: [("team".to_owned(), "checkout".to_owned())].into(),
            status: Status::Firing,
            alerts: vec![alert("a", Status::Firing)],
            external_url: None,
        };
        assert_eq!(notice.title(), "[FIRING] a: no events for 1m (value 0)");
        notice.alerts.push(alert("b", Status::Resolved));
        assert_eq!(notice.title(), "[FIRING:1] team=checkout: a, b");
        assert_eq!(
            notice.common_labels(),
            BTreeMap::from([("team".to_owned(), "checkout".to_owned())])
        );
        assert_ne!(
            notice.alerts[0].fingerprint(),
            notice.alerts[1].fingerprint()
        );
    }
}
