//! The `slack` channel: a message to an incoming webhook, readable as it is: the rule, its
//! value, threshold and window, and a link to the dashboard when `public_url` is set.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::webhook::{client, post};
use super::{AlertChannel, DeliveryError, Notice, Status};
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

/// The message's text (Slack's mrkdwn).
pub fn text(notice: &Notice) -> String {
    let (icon, status) = match notice.status {
        Status::Firing => (":rotating_light:", "FIRING"),
        Status::Resolved => (":white_check_mark:", "RESOLVED"),
    };
    let mut lines = vec![format!("{icon} *[{status}] {}*", notice.rule)];
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
    if let Some(url) = &notice.external_url {
        lines.push(format!(
            "<{}/|Open the dashboard>",
            url.trim_end_matches('/')
        ));
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
