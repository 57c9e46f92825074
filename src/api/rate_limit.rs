//! Per-client rate limits: token buckets (`governor`) for ingestion, in events per second,
//! and for queries, in requests per second. Off unless configured: an ingestion service must
//! not throttle its own producers by surprise.
//!
//! A request that came with an API key is limited by its key; one without (authentication
//! off) by its IP address.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::connections::PeerAddr;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    /// An API key, by id: producers behind one NAT each have their own bucket.
    Key(String),
}

impl ClientKey {
    /// The request's key if it carried one, else its address.
    /// The request's key when it was authenticated, else its peer's address (from the
    /// request's extensions, where the connection put it).
    pub fn of(extensions: &axum::http::Extensions) -> ClientKey {
        match extensions.get::<Principal>() {
            Some(principal) => ClientKey::Key(principal.key_id.clone()),
            None => ClientKey::Ip(
                PeerAddr::ip_of(extensions).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ),
        }
    }
}

/// One limiter: a bucket per client.
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<ClientKey>,
    per_second: u32,
    burst: u32,
    rejected: AtomicU64,
}

/// A refusal: how long until the request would fit (answered `429` `rate_limited`).
#[derive(Debug)]
pub struct Limited {
    pub burst: u32,
    pub per_second: u32,
    pub retry_after: Duration,
}

impl Limiter {
    /// `None` when `per_second` is 0 (no limit). A `burst` of 0 means one second's worth.
    pub fn new(per_second: u32, burst: u32) -> Option<Limiter> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Limiter {
            buckets: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_second: rate.get(),
            burst: burst.get(),
            rejected: AtomicU64::new(0),
        })
    }

    /// Takes `cells` from `client`'s bucket. A request of more cells than the burst is
    /// admitted when the bucket is full (it empties it), so large batches are never refused
    /// forever.
    pub fn check(&self, client: &ClientKey, cells: u32) -> Result<(), Limited> {
        let cells = NonZeroU32::new(cells.clamp(1, self.burst)).expect("at least 1");
        match self.buckets.check_key_n(client, cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(Limited {
                    burst: self.burst,
                    per_second: self.per_second,
                    retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                })
            }
            // Cannot happen: `cells` is at most the burst.
            Err(_) => Ok(()),
        }
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Forgets clients whose bucket is full again (so idle clients cost no memory).
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// The service's limiters.
#[derive(Default)]
pub struct RateLimits {
    pub ingest: Option<Limiter>,
    pub query: Option<Limiter>,
}

impl RateLimits {
    /// Requests refused so far by the ingest and the query limits.
    pub fn rejected(&self) -> [u64; 2] {
        [&self.ingest, &self.query].map(|limiter| limiter.as_ref().map_or(0, Limiter::rejected))
    }

    /// The settings and refusals, as `/health/detailed` shows them.
    pub fn report(&self) -> RateLimitsReport {
        let describe = |limiter: &Option<Limiter>| {
            limiter.as_ref().map(|limiter| LimitReport {
                per_second: limiter.per_second(),
                burst: limiter.burst(),
                rejected_requests: limiter.rejected(),
            })
        };
        RateLimitsReport {
            ingest: describe(&self.ingest),
            query: describe(&self.query),
        }
    }

    /// Forgets idle clients every minute until `stop`.
    pub async fn run_cleanup(
        limits: Arc<RateLimits>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    for limiter in [&limits.ingest, &limits.query].into_iter().flatten() {
                        limiter.forget_idle();
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// What `/health/detailed` says of the rate limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitsReport {
    /// `--ingest-rate-limit`, in events per second; `null` when there is none.
    #[schema(required = true)]
    pub ingest: Option<LimitReport>,
    /// `--query-rate-limit`, in requests per second; `null` when there is none.
    #[schema(required = true)]
    pub query: Option<LimitReport>,
}

/// One limit: its settings, and the requests it refused since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitReport {
    pub per_second: u32,
    pub burst: u32,
    pub rejected_requests: u64,
}

/// Routes the query limit applies to: reads of events and metrics.
const QUERY_ROUTES: &[&str] = &[
    "/events",
    "/events/{id}",
    "/metrics",
    "/metrics/timeseries",
    "/metrics/summary",
];

/// Middleware: the query limit, one cell per read request.
pub async fn limit_queries(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &limits.query {
        let is_query = request.method() == axum::http::Method::GET
            && request
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|path| QUERY_ROUTES.contains(&path.as_str()));
        if is_query {
            if let Err(limited) = limiter.check(&ClientKey::of(request.extensions()), 1) {
                return limited.into_response();
            }
        }
    }
    next.run(request).await
}
