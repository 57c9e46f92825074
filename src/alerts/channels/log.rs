//! The `log` channel: each alert of a notice is a line of the service's log (warn when
//! firing, info when resolved), always available.

use async_trait::async_trait;

use super::{AlertChannel, DeliveryError, Notice, Status};

pub struct LogChannel;

/// The line of `alert` of `notice` at `level`: the same fields whether it fires or resolves.
/// A macro, as tracing fixes an event's level where it is written.
macro_rules! alert_line {
    ($level:ident, $notice:ident, $alert:ident, $text:literal) => {
        tracing::$level!(
            alert = %$alert.rule,
            value = $alert.value.unwrap_or(f64::NAN),
            labels = ?$alert.labels,
            group = %$notice.group_key,
            $text,
            $alert.description
        )
    };
}

#[async_trait]
impl AlertChannel for LogChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        for alert in &notice.alerts {
            match alert.status {
                Status::Firing => alert_line!(warn, notice, alert, "alert firing: {}"),
                Status::Resolved => alert_line!(info, notice, alert, "alert resolved: {}"),
            }
        }
        Ok(())
    }
}
