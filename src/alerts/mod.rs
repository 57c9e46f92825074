//! Alerts: rules on event counts and on the service's own health, evaluated every
//! `interval` from the counts the metrics keep (never by scanning events), turned into
//! notices without noise (Alertmanager's model: `for`, `keep_firing_for`, `group_wait`,
//! `group_interval`, `repeat_interval`, `send_resolved`, silences) and delivered to the log,
//! webhooks, Slack or email.
//!
//! - [`config`]: the alerts file; [`command`]: `eventide alerts check`.
//! - [`rule`]: a rule, checked; [`health`]: the built-in rules on the service's health.
//! - [`state`]: an alert's phases and a channel's notification log, as pure functions.
//! - [`engine`]: the evaluation loop; [`channels`]: the receivers behind one trait, each with
//!   a bounded queue and retries.
//! - [`silence`], [`history`]: what the API shows and takes besides rules.
//!
//! Everything that must survive a restart (rules added over HTTP, each alert's state, what
//! each channel was told, silences) is kept in the [`Store`] as it changes: a notice is
//! recorded as sent once delivered, so a restart neither sends it again nor forgets the
//! resolve that follows.

pub mod channels;
pub mod command;
pub mod config;
mod engine;
pub mod health;
pub mod history;
pub mod rule;
pub mod silence;
pub mod state;
pub mod timing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::event::timefmt::format_rfc3339_ms;
use crate::metrics::EventMetrics;
use crate::store::Store;
use channels::ChannelHandle;
use config::{AlertsConfig, Channel};
use history::HistoryEntry;
use rule::{Origin, Rule, RuleSpec};
use silence::{Matcher, Silence};
use state::{AlertState, GroupLog, Phase};

/// The store's record kinds.
const RULE: &str = "rule";
const STATE: &str = "state";
const GROUP: &str = "group";
const SILENCE: &str = "silence";

/// The longest a silence may last.
const MAX_SILENCE_MS: i64 = 366 * 86_400_000;

/// A rule's alert, as `GET /alerts` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertInfo {
    pub rule: String,
    pub origin: Origin,
    pub state: Phase,
    /// Since when it is in that state (absent before the first evaluation).
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// The value at the last evaluation: the count in the window, or the health value.
    pub value: Option<f64>,
    #[schema(format = DateTime)]
    pub evaluated_at: Option<String>,
    /// When the current firing began.
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// What it watches, in words.
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub channels: Vec<String>,
    /// Whether an active silence matches it.
    pub silenced: bool,
}

/// A rule, as `GET /alerts/rules` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleInfo {
    /// `file` and `builtin` rules cannot be changed over HTTP.
    pub origin: Origin,
    pub rule: RuleSpec,
}

/// A silence, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceInfo {
    pub id: String,
    pub matchers: Vec<Matcher>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    pub comment: String,
    /// Whether it silences now.
    pub active: bool,
}

impl SilenceInfo {
    fn of(silence: &Silence, now_ms: i64) -> SilenceInfo {
        SilenceInfo {
            id: silence.id.clone(),
            matchers: silence.matchers.clone(),
            starts_at: format_rfc3339_ms(silence.starts_at_ms),
            ends_at: format_rfc3339_ms(silence.ends_at_ms),
            comment: silence.comment.clone(),
            active: silence.active(now_ms),
        }
    }
}

/// Why a change asked over HTTP was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    ReadOnly(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What the evaluation loop and the API share.
struct Inner {
    rules: BTreeMap<String, Arc<Rule>>,
    states: HashMap<String, AlertState>,
    /// By (channel, rule).
    groups: HashMap<(String, String), GroupLog>,
    /// Groups with a notice queued or being delivered: nothing more is offered for them.
    in_flight: HashSet<(String, String)>,
    silences: Vec<Silence>,
}

/// The alerting of this process: its rules and their state, its channels.
pub struct Alerts {
    inner: Mutex<Inner>,
    store: Arc<dyn Store>,
    metrics: Arc<EventMetrics>,
    clock: Arc<dyn Clock>,
    signals: health::Signals,
    channels: BTreeMap<String, ChannelHandle>,
    channel_configs: BTreeMap<String, Channel>,
    interval: Duration,
    public_url: Option<String>,
    /// Whether the store is shared with other processes (a cluster's PostgreSQL): then only
    /// the leader evaluates and notifies, and every process reads the others' changes from
    /// the store at each evaluation.
    shared: bool,
    /// Whether this process led at the last evaluation.
    leading: AtomicBool,
}

/// Reads every record of `kind` from the store as `T`, skipping (and logging) any that
/// cannot be read.
async fn load_records<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    kind: &str,
) -> anyhow::Result<Vec<(String, T)>> {
    let records = store
        .alert_records(kind)
        .await
        .with_context(|| format!("reading the alerts' {kind} records"))?;
    Ok(records
        .into_iter()
        .filter_map(|(name, body)| match serde_json::from_str(&body) {
            Ok(value) => Some((name, value)),
            Err(err) => {
                tracing::warn!(kind, name, error = %err, "an alerting record cannot be read; ignored");
                None
            }
        })
        .collect())
}

/// Adds the rules added over HTTP, as kept in `store`, to `rules` (those of the file and the
/// built-in ones), skipping any that no longer fits.
async fn add_api_rules(
    rules: &mut BTreeMap<String, Arc<Rule>>,
    store: &dyn Store,
    channels: &BTreeMap<String, Channel>,
) -> anyhow::Result<()> {
    for (name, spec) in load_records::<RuleSpec>(store, RULE).await? {
        if rules.contains_key(&name) {
            tracing::debug!(rule = %name, "a rule added over HTTP has the name of a rule of the file or a built-in one: the latter is used");
            continue;
        }
        match Rule::from_spec(spec, Origin::Api) {
            Ok(rule) if rule.channels.iter().all(|c| channels.contains_key(c)) => {
                rules.insert(name, Arc::new(rule));
            }
            Ok(_) => {
                tracing::debug!(rule = %name, "a rule added over HTTP names a channel the alerts file no longer has: not evaluated")
            }
            Err(reason) => {
                tracing::debug!(rule = %name, %reason, "a rule added over HTTP is no longer valid: not evaluated")
            }
        }
    }
    Ok(())
}

/// The name of a group's record: channel and rule.
fn group_record(channel: &str, rule: &str) -> String {
    format!("{channel}\u{1f}{rule}")
}

impl Alerts {
    /// Loads what the store kept, starts the channels and the evaluation loop (until `stop`).
    pub async fn start(
        config: AlertsConfig,
        store: Arc<dyn Store>,
        metrics: Arc<EventMetrics>,
        clock: Arc<dyn Clock>,
        signals: health::Signals,
        shared: bool,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Alerts>> {
        let mut rules = BTreeMap::new();
        for rule in &config.rules {
            rules.insert(rule.name.clone(), Arc::new(rule.clone()));
        }
        if config.health.enabled {
            for rule in health::rules(&config.health.channels) {
                rules.insert(rule.name.clone(), Arc::new(rule));
            }
        }
        add_api_rules(&mut rules, store.as_ref(), &config.channels).await?;
        for rule in rules.values() {
            metrics.track_exactly(rule.kind.as_deref(), rule.service.as_deref());
        }
        let states: HashMap<String, AlertState> = load_records(store.as_ref(), STATE)
            .await?
            .into_iter()
            .collect();
        let groups = load_records::<GroupLog>(store.as_ref(), GROUP)
            .await?
            .into_iter()
            .filter_map(|(name, log)| {
                let (channel, rule) = name.split_once('\u{1f}')?;
                Some(((channel.to_owned(), rule.to_owned()), log))
            })
            .collect();
        let silences = load_records::<Silence>(store.as_ref(), SILENCE)
            .await?
            .into_iter()
            .map(|(_, silence)| silence)
            .collect();

        let (outcomes, delivered) = mpsc::unbounded_channel();
        let mut channels = BTreeMap::new();
        for (name, channel) in &config.channels {
            let handle = channels::start(channel, outcomes.clone(), stop.clone())
                .with_context(|| format!("alert channel '{name}'"))?;
            channels.insert(name.clone(), handle);
        }
        let alerts = Arc::new(Alerts {
            inner: Mutex::new(Inner {
                rules,
                states,
                groups,
                in_flight: HashSet::new(),
                silences,
            }),
            store,
            metrics,
            clock,
            signals,
            channels,
            channel_configs: config.channels,
            interval: config.interval,
            public_url: config.public_url,
            shared,
            leading: AtomicBool::new(false),
        });
        tokio::spawn(engine::run(alerts.clone(), delivered, stop));
        Ok(alerts)
    }

    /// Every rule's alert, by rule name.
    pub fn alerts(&self) -> Vec<AlertInfo> {
        let now = self.clock.now_ms();
        let inner = self.inner.lock().unwrap();
        inner
            .rules
            .values()
            .map(|rule| {
                let state = inner.states.get(&rule.name).cloned().unwrap_or_default();
                let labels = rule.alert_labels();
                let silenced = inner
                    .silences
                    .iter()
                    .any(|silence| silence.active(now) && silence.matches(&labels));
                AlertInfo {
                    rule: rule.name.clone(),
                    origin: rule.origin,
                    state: state.phase,
                    since: (state.since_ms > 0).then(|| format_rfc3339_ms(state.since_ms)),
                    value: state.value,
                    evaluated_at: state.evaluated_ms.map(format_rfc3339_ms),
                    starts_at: (state.phase == Phase::Firing)
                        .then_some(state.starts_at_ms)
                        .flatten()
                        .map(format_rfc3339_ms),
                    description: rule.describe(),
                    labels,
                    channels: rule.channels.clone(),
                    silenced,
                }
            })
            .collect()
    }

    pub fn rules(&self) -> Vec<RuleInfo> {
        let inner = self.inner.lock().unwrap();
        inner.rules.values().map(|rule| rule_info(rule)).collect()
    }

    pub fn rule(&self, name: &str) -> Option<RuleInfo> {
        let inner = self.inner.lock().unwrap();
        inner.rules.get(name).map(|rule| rule_info(rule))
    }

    fn check_new(&self, spec: RuleSpec) -> Result<Rule, AlertsError> {
        let rule = Rule::from_spec(spec, Origin::Api).map_err(AlertsError::Invalid)?;
        for channel in &rule.channels {
            if !self.channels.contains_key(channel) {
                return Err(AlertsError::Invalid(format!(
                    "channels: no channel '{channel}' (channels: {})",
                    self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(rule)
    }

    /// Adds a rule (kept in the store).
    pub async fn create_rule(&self, spec: RuleSpec) -> Result<RuleInfo, AlertsError> {
        let rule = self.check_new(spec)?;
        if self.inner.lock().unwrap().rules.contains_key(&rule.name) {
            return Err(AlertsError::Exists(format!(
                "a rule '{}' exists already",
                rule.name
            )));
        }
        self.save_rule(rule).await
    }

    /// Replaces the rule `name` added over HTTP (its alert keeps its state).
    pub async fn replace_rule(&self, name: &str, spec: RuleSpec) -> Result<RuleInfo, AlertsError> {
        self.writable(name)?;
        if spec.name != name {
            return Err(AlertsError::Invalid(format!(
                "name: '{}' is not the rule's name in the path '{name}'",
                spec.name
            )));
        }
        let rule = self.check_new(spec)?;
        self.save_rule(rule).await
    }

    async fn save_rule(&self, rule: Rule) -> Result<RuleInfo, AlertsError> {
        let body = serde_json::to_string(&rule.spec()).context("encoding the rule")?;
        self.store.put_alert_record(RULE, &rule.name, &body).await?;
        self.metrics
            .track_exactly(rule.kind.as_deref(), rule.service.as_deref());
        let info = rule_info(&rule);
        self.inner
            .lock()
            .unwrap()
            .rules
            .insert(rule.name.clone(), Arc::new(rule));
        Ok(info)
    }

    /// Whether the rule `name` exists and may be changed over HTTP.
    fn writable(&self, name: &str) -> Result<(), AlertsError> {
        match self
            .inner
            .lock()
            .unwrap()
            .rules
            .get(name)
            .map(|rule| rule.origin)
        {
            None => Err(AlertsError::NotFound(format!("no rule '{name}'"))),
            Some(Origin::Api) => Ok(()),
            Some(Origin::File) => Err(AlertsError::ReadOnly(format!(
                "the rule '{name}' comes from the alerts file: change it there"
            ))),
            Some(Origin::Builtin) => Err(AlertsError::ReadOnly(format!(
                "the rule '{name}' is built in: turn the health rules off in the alerts file \
                 ([alerts.health] enabled = false)"
            ))),
        }
    }

    /// Deletes a rule added over HTTP, its alert's state and what its channels were told.
    pub async fn delete_rule(&self, name: &str) -> Result<(), AlertsError> {
        self.writable(name)?;
        self.store.delete_alert_record(RULE, name).await?;
        self.store.delete_alert_record(STATE, name).await?;
        let channels = {
            let mut inner = self.inner.lock().unwrap();
            let rule = inner.rules.remove(name);
            inner.states.remove(name);
            let channels = rule.map(|rule| rule.channels.clone()).unwrap_or_default();
            for channel in &channels {
                inner.groups.remove(&(channel.clone(), name.to_owned()));
            }
            channels
        };
        for channel in channels {
            self.store
                .delete_alert_record(GROUP, &group_record(&channel, name))
                .await?;
        }
        Ok(())
    }

    /// A page of the history, newest first, with the `before` of the next page.
    pub async fn history(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<(Vec<HistoryEntry>, Option<i64>)> {
        let rows = self.store.alert_history(before, limit + 1).await?;
        let more = rows.len() > limit;
        let entries: Vec<HistoryEntry> = rows
            .into_iter()
            .take(limit)
            .filter_map(|(id, _, body)| {
                let mut entry: HistoryEntry = serde_json::from_str(&body).ok()?;
                entry.id = id;
                Some(entry)
            })
            .collect();
        let next = if more {
            entries.last().map(|entry| entry.id)
        } else {
            None
        };
        Ok((entries, next))
    }

    /// Adds a silence from now to `ends_at_ms`.
    pub async fn add_silence(
        &self,
        matchers: Vec<Matcher>,
        ends_at_ms: i64,
        comment: String,
        created_by: Option<String>,
    ) -> Result<SilenceInfo, AlertsError> {
        let now = self.clock.now_ms();
        if matchers.is_empty() {
            return Err(AlertsError::Invalid(
                "matchers: at least one (e.g. {\"name\": \"alertname\", \"value\": \"...\"})"
                    .to_owned(),
            ));
        }
        if ends_at_ms <= now {
            return Err(AlertsError::Invalid(
                "the silence must end in the future".to_owned(),
            ));
        }
        if ends_at_ms - now > MAX_SILENCE_MS {
            return Err(AlertsError::Invalid(
                "a silence lasts a year at most".to_owned(),
            ));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).context("no random numbers from the operating system")?;
        let silence = Silence {
            id: format!("sil_{}", channels::hex(&random)),
            matchers,
            starts_at_ms: now,
            ends_at_ms,
            comment,
            created_by,
        };
        let body = serde_json::to_string(&silence).context("encoding the silence")?;
        self.store
            .put_alert_record(SILENCE, &silence.id, &body)
            .await?;
        let info = SilenceInfo::of(&silence, now);
        self.inner.lock().unwrap().silences.push(silence);
        Ok(info)
    }

    /// Every silence, newest first (those ended more than a day ago are forgotten).
    pub fn silences(&self) -> Vec<SilenceInfo> {
        let now = self.clock.now_ms();
        let inner = self.inner.lock().unwrap();
        let mut list: Vec<SilenceInfo> = inner
            .silences
            .iter()
            .rev()
            .map(|silence| SilenceInfo::of(silence, now))
            .collect();
        list.sort_by(|a, b| b.starts_at.cmp(&a.starts_at));
        list
    }

    /// Reads again what other processes sharing the store changed: the rules added over HTTP
    /// and the silences; the alerts' states when `states` (what the leader decided); the
    /// notification logs when `groups` (taking the lead: what the last leader sent).
    async fn reload(&self, states: bool, groups: bool) -> anyhow::Result<()> {
        let mut rules: BTreeMap<String, Arc<Rule>> = self
            .inner
            .lock()
            .unwrap()
            .rules
            .iter()
            .filter(|(_, rule)| rule.origin != Origin::Api)
            .map(|(name, rule)| (name.clone(), rule.clone()))
            .collect();
        add_api_rules(&mut rules, self.store.as_ref(), &self.channel_configs).await?;
        for rule in rules.values().filter(|rule| rule.origin == Origin::Api) {
            self.metrics
                .track_exactly(rule.kind.as_deref(), rule.service.as_deref());
        }
        let silences: Vec<Silence> = load_records(self.store.as_ref(), SILENCE)
            .await?
            .into_iter()
            .map(|(_, silence)| silence)
            .collect();
        let loaded_states: Option<HashMap<String, AlertState>> = if states {
            Some(
                load_records(self.store.as_ref(), STATE)
                    .await?
                    .into_iter()
                    .collect(),
            )
        } else {
            None
        };
        let loaded_groups: Option<HashMap<(String, String), GroupLog>> = if groups {
            Some(
                load_records::<GroupLog>(self.store.as_ref(), GROUP)
                    .await?
                    .into_iter()
                    .filter_map(|(name, log)| {
                        let (channel, rule) = name.split_once('\u{1f}')?;
                        Some(((channel.to_owned(), rule.to_owned()), log))
                    })
                    .collect(),
            )
        } else {
            None
        };
        let mut inner = self.inner.lock().unwrap();
        inner.rules = rules;
        inner.silences = silences;
        if let Some(states) = loaded_states {
            inner.states = states;
        }
        if let Some(groups) = loaded_groups {
            inner.groups = groups;
        }
        Ok(())
    }
}

fn rule_info(rule: &Rule) -> RuleInfo {
    RuleInfo {
        origin: rule.origin,
        rule: rule.spec(),
    }
}
