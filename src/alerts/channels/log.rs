//! The `log` channel: each alert of a notice is a line of the service's log (warn when
//! firing, info when resolved), always available.

use async_trait::async_trait;

use super::{AlertChannel, DeliveryError, Notice, Status};

pub struct LogChannel;

#[async_trait]
impl AlertChannel for LogChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        for alert in &notice.alerts {
            let value = alert.value.unwrap_or(f64::NAN);
            match alert.status {
                Status::Firing => tracing::warn!(
                    alert = %alert.rule,
                    value,
                    labels = ?alert.labels,
                    group = %notice.group_key,
                    "alert firing: {}",
                    alert.description
                ),
                Status::Resolved => tracing::info!(
                    alert = %alert.rule,
                    value,
                    labels = ?alert.labels,
                    group = %notice.group_key,
                    "alert resolved: {}",
                    alert.description
                ),
            }
        }
        Ok(())
    }
}
