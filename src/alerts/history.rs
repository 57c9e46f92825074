//! The history of alerting: state changes and notices, kept in the store newest first.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// History entries a store keeps; older ones are deleted as new ones come.
pub const HISTORY_KEPT: i64 = 10_000;

/// One entry of `GET /alerts/history`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": 12, "at": "2024-01-15T10:30:00.000Z", "rule": "checkout-stopped",
    "event": "notified", "channel": "ops", "status": "firing", "value": 0.0
}))]
pub struct HistoryEntry {
    /// Increasing; `before` of the next page.
    #[serde(default)]
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub rule: String,
    /// `pending`, `firing`, `resolved`, `cleared` (pending ended before `for`): the alert's
    /// changes; `notified`, `notify_failed` (given up after retrying), `not_sent` (the end
    /// of a silenced alert, or without `send_resolved`): its notices.
    pub event: String,
    /// The channel of a notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// What a notice announced: `firing` or `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The value observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why a notice failed (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
