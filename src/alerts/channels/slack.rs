//! The `slack` channel: a message to an incoming webhook, readable as it is: the rule, its
//! value, threshold and window, and a link to the dashboard when `public_url` is set.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::webhook::{client, post};
use super::{AlertChannel, AlertNotice, DeliveryError, Notice, Status};
use crate::config::Secret;
use crate::event::timefmt::format_rfc3339_ms;

pub struct SlackChannel {
    client: reqwest::Client,
    /// The incoming webhook's URL: itself the credential.
    url: Secret,
}

impl SlackChannel {
    pub fn new(url: Secret, timeout: Duration) -> Result<SlackChannel, anyhow::Error> {
        Ok(SlackChannel {
            client: client(timeout)?,
            url,
        })
    }
}

fn icon(status: Status) -> &'static str {
    match status {
        Status::Firing => ":rotating_light:",
        Status::Resolved => ":white_check_mark:",
    }
}

/// The message's text (Slack's mrkdwn): each alert of the notice, under the notice's title
/// when there are several, then a link to the dashboard when `public_url` is set.
pub fn text(notice: &Notice) -> String {
    let mut blocks = Vec::new();
    if notice.alerts.len() > 1 {
        blocks.push(format!("{} *{}*", icon(notice.status), notice.title()));
    }
    blocks.extend(notice.alerts.iter().map(alert_text));
    if let Some(url) = &notice.external_url {
        blocks.push(format!(
            "<{}/|Open the dashboard>",
            url.trim_end_matches('/')
        ));
    }
    blocks.join("\n")
}

/// One alert: its rule, what it watches, its figures and times.
fn alert_text(notice: &AlertNotice) -> String {
    let status = notice.status.name().to_uppercase();
    let mut lines = vec![format!(
        "{} *[{status}] {}*",
        icon(notice.status),
        notice.rule
    )];
    lines.push(notice.description.clone());
    let mut figures = Vec::new();
    if let Some(value) = notice.value {
        figures.push(format!("value: *{value}*"));
    }
    if let Some(threshold) = notice.threshold {
        figures.push(format!("threshold: {threshold}"));
    }
    figures.push(format!("window: {}", notice.window));
    lines.push(figures.join(" · "));
    lines.push(match (notice.status, notice.ends_at_ms) {
        (Status::Resolved, Some(end)) => format!(
            "from {} to {}",
            format_rfc3339_ms(notice.starts_at_ms),
            format_rfc3339_ms(end)
        ),
        _ => format!("since {}", format_rfc3339_ms(notice.starts_at_ms)),
    });
    if let Some(summary) = notice.annotations.get("summary") {
        lines.push(format!("_{summary}_"));
    }
    lines.join("\n")
}

#[async_trait]
impl AlertChannel for SlackChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&json!({ "text": text(notice) }))
            .map_err(|err| DeliveryError(err.to_string()))?;
        post(&self.client, &self.url.0, body, None).await
    }
}
