//! The alerts file (`--alerts-config`): TOML read into the types below, then checked as a
//! whole (durations, thresholds, channel names, duplicates), every error with its line, so
//! that `eventide alerts check FILE` and the server's start refuse the same files alike.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::rule::{Rule, RuleSpec, LOG_CHANNEL};
use super::timing::{Timing, TimingSpec};
use crate::config::{parse_duration, Secret};

/// The default of `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The shortest `interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    alerts: Option<Section>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    interval: Option<Spanned<String>>,
    /// The dashboard's public address, for links in notices.
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    channels: Vec<Spanned<ChannelSpec>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
    #[serde(default)]
    health: Option<Spanned<HealthSpec>>,
}

/// `[alerts.health]`: the service's own rules.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// On by default.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where they go; the log by default.
    #[serde(default = "log_only")]
    pub channels: Vec<String>,
}

fn yes() -> bool {
    true
}

fn log_only() -> Vec<String> {
    vec![LOG_CHANNEL.to_owned()]
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            enabled: true,
            channels: log_only(),
        }
    }
}

/// What kind of receiver a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Slack,
    Email,
    Log,
}

/// How an email channel talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption: only for a relay on the same machine or a test server.
    None,
}

/// `[[alerts.channels]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub name: String,
    pub kind: ChannelKind,
    /// webhook, slack: where to POST (a secret: Slack's URL is the credential).
    #[serde(default)]
    pub url: Option<String>,
    /// webhook: the shared secret of the `X-Eventide-Signature` HMAC-SHA256 header.
    #[serde(default)]
    pub secret: Option<String>,
    /// email: the SMTP server.
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// email: a PEM file of certificates trusted besides the usual roots, for an SMTP
    /// server whose certificate is self-signed or from a private authority.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub group_wait: Option<String>,
    #[serde(default)]
    pub group_interval: Option<String>,
    #[serde(default)]
    pub repeat_interval: Option<String>,
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// The labels whose values group alerts into one notice (default `["alertname"]`).
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// How long one attempt may take (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The longest wait between two attempts of a notice (default 30s).
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// Notices that may wait for this channel (default 256); beyond, new ones wait for the
    /// next evaluation.
    #[serde(default)]
    pub queue: Option<usize>,
}

/// A channel, checked: what [`super::channels`] builds its sender from.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub target: Target,
    pub timing: Timing,
    pub timeout: Duration,
    pub max_backoff: Duration,
    pub queue: usize,
}

/// Where a channel's notices go; secrets are [`Secret`]s, which print as `***`.
#[derive(Debug, Clone)]
pub enum Target {
    Log,
    Webhook { url: Secret, secret: Option<Secret> },
    Slack { url: Secret },
    Email(EmailTarget),
}

#[derive(Debug, Clone)]
pub struct EmailTarget {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// The PEM text of `ca_file`: certificates trusted besides the usual roots.
    pub ca_pem: Option<Vec<u8>>,
    pub login: Option<(String, Secret)>,
    pub from: String,
    pub to: Vec<String>,
}

/// The log channel when the file does not define one: at once, resolves within 30 s.
pub fn log_channel() -> Channel {
    Channel {
        name: LOG_CHANNEL.to_owned(),
        kind: ChannelKind::Log,
        target: Target::Log,
        timing: Timing {
            group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(30),
            ..Timing::default()
        },
        timeout: Duration::from_secs(10),
        max_backoff: Duration::from_secs(30),
        queue: 256,
    }
}

/// The alerts configuration, checked.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub interval: Duration,
    pub public_url: Option<String>,
    /// By name; `log` always among them.
    pub channels: BTreeMap<String, Channel>,
    /// The file's rules, in its order.
    pub rules: Vec<Rule>,
    pub health: HealthSpec,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval: DEFAULT_INTERVAL,
            public_url: None,
            channels: BTreeMap::from([(LOG_CHANNEL.to_owned(), log_channel())]),
            rules: Vec::new(),
            health: HealthSpec::default(),
        }
    }
}

/// One problem of a file, with its line (from 1) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line of `field = ...` within `span` of `text` (a table), if it is written there: where
/// an error about that field points, rather than at the table's first line.
fn field_line(text: &str, span: std::ops::Range<usize>, field: &str) -> Option<usize> {
    let table = text.get(span.clone())?;
    let mut offset = span.start;
    for line in table.split_inclusive('\n') {
        let written = line.trim_start();
        if let Some(rest) = written.strip_prefix(field) {
            if rest.trim_start().starts_with('=') {
                return Some(line_of(text, offset));
            }
        }
        offset += line.len();
    }
    None
}

/// The line an error `message` ("field: reason") about the table at `span` points at.
fn error_line(text: &str, span: std::ops::Range<usize>, message: &str) -> Option<usize> {
    let field = message.split(':').next().unwrap_or("").trim();
    field_line(text, span.clone(), field).or(Some(line_of(text, span.start)))
}

/// Reads and checks an alerts file's text: the configuration, or every problem found.
pub fn parse(text: &str) -> Result<AlertsConfig, Vec<ConfigError>> {
    let file: File = toml::from_str(text).map_err(|err| {
        vec![ConfigError {
            line: err.span().map(|span| line_of(text, span.start)),
            message: err.message().trim().to_owned(),
        }]
    })?;
    let Some(section) = file.alerts else {
        return Ok(AlertsConfig::default());
    };
    let mut errors = Vec::new();
    let mut config = AlertsConfig::default();
    let at = |span: std::ops::Range<usize>| Some(line_of(text, span.start));

    if let Some(interval) = &section.interval {
        match parse_duration(interval.get_ref()) {
            Ok(value) if value >= MIN_INTERVAL => config.interval = value,
            Ok(_) => errors.push(ConfigError {
                line: at(interval.span()),
                message: "interval: at least 1s".to_owned(),
            }),
            Err(reason) => errors.push(ConfigError {
                line: at(interval.span()),
                message: format!("interval: {reason}"),
            }),
        }
    }
    config.public_url = section.public_url.clone();

    for channel in &section.channels {
        let line = at(channel.span());
        let spec = channel.get_ref();
        // A channel named `log` replaces the default one.
        match check_channel(spec) {
            Ok(checked) => {
                let duplicate = section
                    .channels
                    .iter()
                    .filter(|other| other.get_ref().name == spec.name)
                    .count()
                    > 1;
                if duplicate {
                    errors.push(ConfigError {
                        line,
                        message: format!("channel '{}' is defined more than once", spec.name),
                    });
                }
                config.channels.insert(spec.name.clone(), checked);
            }
            Err(message) => errors.push(ConfigError {
                line: error_line(text, channel.span(), &message),
                message: format!("channel '{}': {message}", spec.name),
            }),
        }
    }

    let mut names = HashSet::new();
    for rule in &section.rules {
        let line = at(rule.span());
        let spec = rule.get_ref();
        if !names.insert(spec.name.clone()) {
            errors.push(ConfigError {
                line,
                message: format!("rule '{}' is defined more than once", spec.name),
            });
            continue;
        }
        match Rule::from_spec(spec.clone(), super::rule::Origin::File) {
            Ok(checked) => {
                for channel in &checked.channels {
                    if !config.channels.contains_key(channel) {
                        errors.push(ConfigError {
                            line: field_line(text, rule.span(), "channels").or(line),
                            message: format!(
                                "rule '{}': no channel '{channel}' (channels: {})",
                                spec.name,
                                config
                                    .channels
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                }
                config.rules.push(checked);
            }
            Err(message) => errors.push(ConfigError {
                line: error_line(text, rule.span(), &message),
                message: format!("rule '{}': {message}", spec.name),
            }),
        }
    }

    if let Some(health) = section.health {
        let line = at(health.span());
        let health = health.into_inner();
        for channel in &health.channels {
            if !config.channels.contains_key(channel) {
                errors.push(ConfigError {
                    line,
                    message: format!("health: no channel '{channel}'"),
                });
            }
        }
        config.health = health;
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Reads and checks the file at `path`; errors name the file and their lines.
pub fn load(path: &std::path::Path) -> Result<AlertsConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![ConfigError {
            line: None,
            message: format!("cannot read {}: {err}", path.display()),
        }]
    })?;
    parse(&text)
}

fn required(value: &Option<String>, field: &str) -> Result<String, String> {
    match value.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(format!("{field} is required")),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    // Any host the operator names, loopback and private addresses included.
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(())
        }
        // The URL itself may be the secret (Slack's): never repeated.
        _ => Err("url: not an http:// or https:// URL".to_owned()),
    }
}

fn check_channel(spec: &ChannelSpec) -> Result<Channel, String> {
    if spec.name.trim().is_empty() {
        return Err("name: must not be empty".to_owned());
    }
    let base = if spec.kind == ChannelKind::Log {
        log_channel().timing
    } else {
        Timing::default()
    };
    let timing = TimingSpec {
        group_wait: spec.group_wait.clone(),
        group_interval: spec.group_interval.clone(),
        repeat_interval: spec.repeat_interval.clone(),
        send_resolved: spec.send_resolved,
        group_by: spec.group_by.clone(),
    }
    .over(base)?;
    let duration = |field: &str, text: &Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Ok(value) if !value.is_zero() => Ok(value),
            Ok(_) => Err(format!("{field}: must be more than 0")),
            Err(reason) => Err(format!("{field}: {reason}")),
        },
    };
    let timeout = duration("timeout", &spec.timeout, Duration::from_secs(10))?;
    let max_backoff = duration("max_backoff", &spec.max_backoff, Duration::from_secs(30))?;
    let queue = spec.queue.unwrap_or(256);
    if queue == 0 {
        return Err("queue: at least 1".to_owned());
    }
    let target = match spec.kind {
        ChannelKind::Log => Target::Log,
        ChannelKind::Webhook => {
            let url = required(&spec.url, "url")?;
            check_url(&url)?;
            Target::Webhook {
                url: Secret(url),
                secret: spec.secret.clone().map(Secret),
            }
        }
        ChannelKind::Slack => {
            let url = required(&spec.url, "url")?;
            check_url(&url)?;
            Target::Slack { url: Secret(url) }
        }
        ChannelKind::Email => {
            let host = required(&spec.smtp_host, "smtp_host")?;
            let from = required(&spec.from, "from")?;
            if spec.to.is_empty() {
                return Err("to: at least one address".to_owned());
            }
            for address in std::iter::once(&from).chain(&spec.to) {
                address
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|err| format!("'{address}' is not an email address: {err}"))?;
            }
            let ca_pem = match &spec.ca_file {
                None => None,
                Some(_) if spec.tls == SmtpTls::None => {
                    return Err("ca_file: only with tls = \"starttls\" or \"tls\"".to_owned())
                }
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|err| format!("ca_file: cannot read {path}: {err}"))?;
                    lettre::transport::smtp::client::Certificate::from_pem(&pem)
                        .map_err(|err| format!("ca_file: {path}: {err}"))?;
                    Some(pem)
                }
            };
            let login = match (&spec.username, &spec.password) {
                (Some(user), Some(password)) => Some((user.clone(), Secret(password.clone()))),
                (None, None) => None,
                _ => return Err("username and password go together".to_owned()),
            };
            Target::Email(EmailTarget {
                host,
                port: spec.smtp_port.unwrap_or(match spec.tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                }),
                tls: spec.tls,
                ca_pem,
                login,
                from,
                to: spec.to.clone(),
            })
        }
    };
    if spec.kind != ChannelKind::Webhook && spec.secret.is_some() {
        return Err("secret: only webhooks sign their notices".to_owned());
    }
    Ok(Channel {
        name: spec.name.clone(),
        kind: spec.kind,
        target,
        timing,
        timeout,
        max_backoff,
        queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[alerts]
interval = "15s"

[[alerts.channels]]
name = "ops"
kind = "webhook"            # webhook | slack | email | log
url = "https://hooks.example/eventide"
send_resolved = true
group_wait = "30s"
repeat_interval = "4h"

[[alerts.rules]]
name = "checkout-stopped"
type = "checkout"           # optional filters: type, service
window = "10m"
condition = "absent"        # above | below | absent
for = "0s"
channels = ["ops"]

[[alerts.rules]]
name = "login-failures-spike"
type = "login_failed"
window = "5m"
condition = "above"
threshold = 100
for = "1m"
channels = ["ops"]
"#;

    #[test]
    fn the_issue_example_is_valid() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.interval, Duration::from_secs(15));
        assert_eq!(config.rules.len(), 2);
        assert_eq!(config.rules[1].for_, Duration::from_secs(60));
        let ops = &config.channels["ops"];
        assert_eq!(ops.timing.group_wait, Duration::from_secs(30));
        assert_eq!(ops.timing.group_interval, Duration::from_secs(300));
        assert!(config.channels.contains_key(LOG_CHANNEL));
        assert!(!format!("{:?}", ops.target).contains("hooks.example"));
    }

    #[test]
    fn errors_name_their_lines() {
        let text = EXAMPLE
            .replace(
                "channels = [\"ops\"]\n\n[[alerts.rules]]",
                "channels = [\"nope\"]\n\n[[alerts.rules]]",
            )
            .replace("window = \"5m\"", "window = \"5x\"");
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].message.contains("no channel 'nope'"),
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|error| error.line.is_some()),
            "{errors:?}"
        );
        let syntax = parse("[alerts]\ninterval = \n").unwrap_err();
        assert_eq!(syntax[0].line, Some(2), "{syntax:?}");
        let unknown = parse("[alerts]\nintreval = \"1s\"\n").unwrap_err();
        assert!(unknown[0].message.contains("intreval"), "{unknown:?}");
        let short = parse("[alerts]\ninterval = \"500ms\"\n").unwrap_err();
        assert_eq!(short[0].line, Some(2));
    }

    #[test]
    fn an_empty_file_has_the_log_channel_and_health_rules() {
        let config = parse("").unwrap();
        assert!(config.health.enabled);
        assert_eq!(config.interval, DEFAULT_INTERVAL);
        assert!(config.channels.contains_key(LOG_CHANNEL));
    }
}
