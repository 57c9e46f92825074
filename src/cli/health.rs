//! `eventide health`: asks a server whether it is up (`GET /health`) or ready to take events
//! (`GET /health/ready`) and says so in its exit status, for a container's `HEALTHCHECK`, a
//! compose file's or an orchestrator's probe, with no shell tools in the image: 0 when the
//! server answered `200`, 1 on anything else (refused, timed out, not ready, an invalid URL).
//! Never 2, which Docker reserves; a line on stdout or stderr says what happened (Docker
//! keeps it with the check's result).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use eventide::client::{describe_error, error_chain};
use eventide::config::parse_duration;

/// The exit status of a check that failed, whatever the reason.
pub const UNHEALTHY: u8 = 1;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The server's base URL. By default the server this process's environment configures:
    /// the port of EVENTIDE_ADDR on loopback when it listens on every address (as in the
    /// container image), else that address itself; without EVENTIDE_ADDR,
    /// http://127.0.0.1:8080
    #[arg(long)]
    pub url: Option<String>,

    /// Ask `/health/ready` (can it take and store events now?) rather than `/health` (does
    /// it answer at all?)
    #[arg(long)]
    pub ready: bool,

    /// How long to wait for the whole answer
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs the check and returns the exit status: 0 healthy, [`UNHEALTHY`] otherwise.
pub async fn run(args: HealthArgs) -> u8 {
    match check(&args).await {
        Ok(report) => {
            println!("healthy: {report}");
            0
        }
        Err(report) => {
            eprintln!("unhealthy: {report}");
            UNHEALTHY
        }
    }
}

/// What the server answered, or why there was no good answer.
async fn check(args: &HealthArgs) -> Result<String, String> {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => default_url(std::env::var("EVENTIDE_ADDR").ok().as_deref())?,
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!(
            "--url must start with http:// or https://, not '{base}'"
        ));
    }
    let url = format!(
        "{base}{}",
        if args.ready {
            "/health/ready"
        } else {
            "/health"
        }
    );
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .user_agent(concat!("eventide-health/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot make an HTTP client: {err}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|err| format!("cannot reach {url}: {}", error_chain(&err)))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match status {
        200 => Ok(format!("{url} answered 200")),
        _ => Err(format!("{url}: {}", describe_error(status, &text))),
    }
}

/// The URL of the server `EVENTIDE_ADDR` (the server's own variable) makes listen: the
/// address a client on this machine reaches it at.
fn default_url(addr: Option<&str>) -> Result<String, String> {
    let Some(addr) = addr.map(str::trim).filter(|addr| !addr.is_empty()) else {
        return Ok("http://127.0.0.1:8080".to_owned());
    };
    let listen: SocketAddr = addr
        .parse()
        .map_err(|_| format!("EVENTIDE_ADDR '{addr}' is not an address and port; give --url"))?;
    let reach = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!("http://{}", SocketAddr::new(reach, listen.port())))
}

#[cfg(test)]
mod tests {
    use super::default_url;

    #[test]
    fn the_default_url_reaches_the_address_eventide_addr_makes_the_server_listen_on() {
        assert_eq!(default_url(None).unwrap(), "http://127.0.0.1:8080");
        assert_eq!(default_url(Some("")).unwrap(), "http://127.0.0.1:8080");
        assert_eq!(
            default_url(Some("0.0.0.0:8080")).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(default_url(Some("[::]:9090")).unwrap(), "http://[::1]:9090");
        assert_eq!(
            default_url(Some("10.1.2.3:8081")).unwrap(),
            "http://10.1.2.3:8081"
        );
        assert!(default_url(Some("localhost:8080"))
            .unwrap_err()
            .contains("--url"));
    }
}
