//! The `webhook` channel: a POST of JSON shaped like Alertmanager's webhook payload
//! (version 4), so receivers written for it work, plus each alert's observed `value`; signed
//! with HMAC-SHA256 of the body in `X-Eventide-Signature: sha256=<hex>` when a secret is set.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{hex, AlertChannel, DeliveryError, Notice, Status};
use crate::config::Secret;
use crate::event::timefmt::format_rfc3339_ms;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-eventide-signature";

/// Alertmanager's `endsAt` of an alert still firing.
const NO_END: &str = "0001-01-01T00:00:00Z";

pub struct WebhookChannel {
    client: reqwest::Client,
    url: Secret,
    secret: Option<Secret>,
}

/// The payload, Alertmanager's version 4.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    pub version: &'static str,
    pub group_key: String,
    pub truncated_alerts: u32,
    pub status: &'static str,
    pub receiver: &'a str,
    pub group_labels: &'a BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: &'a str,
    pub alerts: Vec<PayloadAlert<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadAlert<'a> {
    pub status: &'static str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
    /// The value observed at the last evaluation (an Eventide addition).
    pub value: Option<f64>,
    pub threshold: Option<u64>,
    pub window: &'a str,
}

/// The JSON body of `notice`.
pub fn payload(notice: &Notice) -> Payload<'_> {
    let external_url = notice.external_url.as_deref().unwrap_or("");
    let generator_url = if external_url.is_empty() {
        String::new()
    } else {
        format!("{}/#alerts", external_url.trim_end_matches('/'))
    };
    Payload {
        version: "4",
        group_key: notice.group_key.clone(),
        truncated_alerts: 0,
        status: notice.status.name(),
        receiver: &notice.channel,
        group_labels: &notice.group_labels,
        common_labels: notice.common_labels(),
        common_annotations: notice.common_annotations(),
        external_url,
        alerts: notice
            .alerts
            .iter()
            .map(|alert| PayloadAlert {
                status: alert.status.name(),
                labels: &alert.labels,
                annotations: &alert.annotations,
                starts_at: format_rfc3339_ms(alert.starts_at_ms),
                ends_at: match (alert.status, alert.ends_at_ms) {
                    (Status::Resolved, Some(end)) => format_rfc3339_ms(end),
                    _ => NO_END.to_owned(),
                },
                generator_url: generator_url.clone(),
                fingerprint: alert.fingerprint(),
                value: alert.value,
                threshold: alert.threshold,
                window: &alert.window,
            })
            .collect(),
    }
}

/// `sha256=<hex>` of HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// The HTTP client of the webhook and Slack channels: bounded in time, no redirects (a
/// receiver's redirect could lead a signed body elsewhere).
pub fn client(timeout: Duration) -> Result<reqwest::Client, anyhow::Error> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("eventide/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// POSTs `body` as JSON; any answer but 2xx is a failure. Errors never show the URL.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> Result<(), DeliveryError> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let response = request
        .send()
        .await
        .map_err(|err| DeliveryError(format!("{:#}", anyhow::Error::from(err.without_url()))))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError(format!("the receiver answered {status}")))
    }
}

impl WebhookChannel {
    pub fn new(
        url: Secret,
        secret: Option<Secret>,
        timeout: Duration,
    ) -> Result<WebhookChannel, anyhow::Error> {
        Ok(WebhookChannel {
            client: client(timeout)?,
            url,
            secret,
        })
    }
}

#[async_trait]
impl AlertChannel for WebhookChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let body =
            serde_json::to_vec(&payload(notice)).map_err(|err| DeliveryError(err.to_string()))?;
        let signature = self
            .secret
            .as_ref()
            .map(|secret| signature(&secret.0, &body));
        post(&self.client, &self.url.0, body, signature).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
