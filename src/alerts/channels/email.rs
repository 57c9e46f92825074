//! The `email` channel: a plain-text message over SMTP (lettre), with STARTTLS or implicit
//! TLS through rustls (trusting the web PKI's roots and those of `ca_file`), or none for a
//! relay on the same machine; optional login (the password is a [`Secret`] and lettre's
//! errors never hold it).
//!
//! [`Secret`]: crate::config::Secret

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{AlertChannel, AlertNotice, DeliveryError, Notice};
use crate::alerts::config::{EmailTarget, SmtpTls};
use crate::event::timefmt::format_rfc3339_ms;

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailChannel {
    pub fn new(target: &EmailTarget, timeout: Duration) -> Result<EmailChannel, anyhow::Error> {
        let parameters = || -> Result<TlsParameters, anyhow::Error> {
            let mut parameters = TlsParameters::builder(target.host.clone());
            if let Some(pem) = &target.ca_pem {
                parameters = parameters.add_root_certificate(Certificate::from_pem(pem)?);
            }
            Ok(parameters.build()?)
        };
        let tls = match target.tls {
            // Refuses a server that does not offer STARTTLS: nothing goes out in clear.
            SmtpTls::Starttls => Tls::Required(parameters()?),
            SmtpTls::Tls => Tls::Wrapper(parameters()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
            .tls(tls)
            .port(target.port)
            .timeout(Some(timeout));
        if let Some((user, password)) = &target.login {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        Ok(EmailChannel {
            transport: builder.build(),
            from: target.from.parse()?,
            to: target
                .to
                .iter()
                .map(|address| address.parse())
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The message's body: plain text, the notice's title, then each alert, one fact a line.
fn text(notice: &Notice) -> String {
    let mut blocks = vec![notice.title()];
    blocks.extend(notice.alerts.iter().map(alert_text));
    if let Some(url) = &notice.external_url {
        blocks.push(format!("Dashboard: {}/", url.trim_end_matches('/')));
    }
    blocks.join("\n\n")
}

fn alert_text(notice: &AlertNotice) -> String {
    let mut lines = vec![
        format!("Rule: {}", notice.rule),
        format!("Status: {}", notice.status.name()),
        format!("Watching: {}", notice.description),
        format!("Window: {}", notice.window),
        format!("Since: {}", format_rfc3339_ms(notice.starts_at_ms)),
    ];
    if let Some(value) = notice.value {
        lines.push(format!("Value: {value}"));
    }
    if let Some(threshold) = notice.threshold {
        lines.push(format!("Threshold: {threshold}"));
    }
    if let Some(end) = notice.ends_at_ms {
        lines.push(format!("Ended: {}", format_rfc3339_ms(end)));
    }
    for (name, value) in &notice.annotations {
        lines.push(format!("{name}: {value}"));
    }
    lines.join("\n")
}

#[async_trait]
impl AlertChannel for EmailChannel {
    async fn deliver(&self, notice: &Notice) -> Result<(), DeliveryError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(notice.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(text(notice))
            .map_err(|err| DeliveryError(format!("the message cannot be built: {err}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|err| DeliveryError(format!("SMTP: {err}")))
    }
}
