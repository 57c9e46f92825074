//! The `log` channel: a notice is a line of the service's log (warn when firing, info when
//! resolved), always available.

use async_trait::async_trait;

use super::{AlertChannel, DeliveryError, Notice, Status};

pub struct LogChannel;

#[async_trait]
impl AlertChannel for LogChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let value = notice.value.unwrap_or(f64::NAN);
        match notice.status {
            Status::Firing => tracing::warn!(
                alert = %notice.rule,
                value,
                labels = ?notice.labels,
                "alert firing: {}",
                notice.description
            ),
            Status::Resolved => tracing::info!(
                alert = %notice.rule,
                value,
                labels = ?notice.labels,
                "alert resolved: {}",
                notice.description
            ),
        }
        Ok(())
    }
}
