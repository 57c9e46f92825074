//! The `POST /events` load engine: keep-alive connections sending pre-built requests on a
//! [`Schedule`] (back to back until a deadline, paced at a rate, or a fixed count), with
//! 429 back-off and optional visibility probes for the sustained scenario.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::http::{HttpConnection, Response};
use tokio::sync::Semaphore;

use super::gen::{IdSource, RequestTemplate, Rng};
use super::key::get_request;
use super::stats::micros;

/// A request that takes longer than this is counted as an error and its connection
/// replaced, so a stalled server cannot hang the benchmark.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a 429 that carries no usable `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);
/// Pause after a failed connect before trying again, so a dead server is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Error descriptions kept per run for the report; the count is always complete.
const MAX_ERROR_SAMPLES: usize = 5;
/// Probes in flight at once; a probe arriving when all are busy is skipped rather than
/// queued, because queueing would add waiting time to the lag it measures.
/// 256 covers one probe per batch at 120 batches/s with two seconds of lag.
const MAX_PROBES_IN_FLIGHT: usize = 256;
/// A probed event not visible this long after its 202 is counted as timed out.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// When the connections send their requests.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Back to back until the deadline.
    UntilDeadline { deadline: Instant },
    /// Requests (counted across all connections) are due one `pace` interval apart, an
    /// interval the caller may change during the run; nothing due at or after `deadline` is
    /// sent. A connection that falls behind (slow answers, 429 back-off) sends its next
    /// request at once, so the total offered never exceeds what the pace allowed.
    Paced { pace: Arc<Pace>, deadline: Instant },
    /// Exactly `requests` requests across all connections, retrying 429s until
    /// `give_up_at` (preloading).
    Count { requests: u64, give_up_at: Instant },
}

impl Schedule {
    /// The time after which no new request or retry is started.
    fn stop_at(&self) -> Instant {
        match *self {
            Schedule::UntilDeadline { deadline } | Schedule::Paced { deadline, .. } => deadline,
            Schedule::Count { give_up_at, .. } => give_up_at,
        }
    }
}

/// The request rate of a paced run, adjustable while it runs.
#[derive(Debug)]
pub struct Pace {
    next_due: Mutex<Instant>,
    interval_ns: AtomicU64,
}

impl Pace {
    pub fn new(start: Instant, requests_per_sec: f64) -> Arc<Pace> {
        let pace = Pace {
            next_due: Mutex::new(start),
            interval_ns: AtomicU64::new(0),
        };
        pace.set_rate(requests_per_sec);
        Arc::new(pace)
    }

    pub fn set_rate(&self, requests_per_sec: f64) {
        let interval_ns = (1e9 / requests_per_sec.max(0.001)) as u64;
        self.interval_ns.store(interval_ns, Ordering::Relaxed);
    }

    pub fn rate(&self) -> f64 {
        1e9 / self.interval_ns.load(Ordering::Relaxed).max(1) as f64
    }

    /// When the next request is due; each call reserves one slot.
    fn next_due(&self) -> Instant {
        let interval = Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed));
        let mut next_due = lock(&self.next_due);
        // A run that fell behind does not make up for lost time in a burst.
        let due = (*next_due).max(Instant::now() - interval);
        *next_due = due + interval;
        due
    }
}

/// A complete description of one load run.
#[derive(Debug)]
pub struct PostLoad {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Requests rotate through these so bodies differ beyond the patched slots.
    pub templates: Vec<RequestTemplate>,
    /// Sent as the very last request of a [`Schedule::Count`] run, for a total that is not
    /// a whole number of batches.
    pub final_request: Option<RequestTemplate>,
    pub ids: Arc<IdSource>,
    pub schedule: Schedule,
    /// When set, the first event of every acknowledged request (which must carry a client
    /// id) is probed for visibility.
    pub probes: Option<Arc<Prober>>,
}

/// What a load run achieved, summed over its connections.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub acknowledged_events: u64,
    pub acknowledged_requests: u64,
    pub rejected_429: u64,
    /// Non-2xx answers other than 429, plus transport failures and timeouts.
    pub errors: u64,
    /// Of the errors, `503` answers (e.g. a cluster's queue unavailable).
    pub unavailable_503: u64,
    pub error_samples: Vec<String>,
    /// Latency of each acknowledged request.
    pub latencies_us: Vec<u32>,
    /// From the start of the run until the last connection finished.
    pub elapsed: Duration,
}

impl LoadOutcome {
    pub fn record_error(&mut self, description: String) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(description);
        }
    }

    /// Records an answer the caller does not expect (a `503` also counted as such) or a
    /// failure to get one; true after a failure, when the connection must not be reused.
    fn record_unexpected(&mut self, what: &str, answer: Result<Response<'_>, String>) -> bool {
        match answer {
            Ok(response) => {
                self.unavailable_503 += u64::from(response.status == 503);
                self.record_error(describe_refusal(what, &response));
                false
            }
            Err(failure) => {
                self.record_error(failure);
                true
            }
        }
    }

    pub fn merge(&mut self, other: LoadOutcome) {
        self.acknowledged_events += other.acknowledged_events;
        self.acknowledged_requests += other.acknowledged_requests;
        self.rejected_429 += other.rejected_429;
        self.errors += other.errors;
        self.unavailable_503 += other.unavailable_503;
        for sample in other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES {
                self.error_samples.push(sample);
            }
        }
        self.latencies_us.extend(other.latencies_us);
    }

    /// Acknowledged events per second of run time.
    pub fn events_per_sec(&self) -> f64 {
        rate(self.acknowledged_events, self.elapsed)
    }
}

/// `count / elapsed`, or 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// State the connection tasks of one run share.
#[derive(Debug)]
struct SharedLoad {
    plan: PostLoad,
    next_request: AtomicU64,
}

impl SharedLoad {
    /// Claims the next request, sleeping until it is due on a paced schedule; `None` once
    /// the schedule is exhausted.
    async fn claim(&self) -> Option<u64> {
        match &self.plan.schedule {
            Schedule::UntilDeadline { deadline } => (Instant::now() < *deadline)
                .then(|| self.next_request.fetch_add(1, Ordering::Relaxed)),
            Schedule::Paced { pace, deadline } => {
                let due = pace.next_due();
                if due >= *deadline {
                    return None;
                }
                let index = self.next_request.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until(due.into()).await;
                Some(index)
            }
            Schedule::Count { requests, .. } => {
                let index = self.next_request.fetch_add(1, Ordering::Relaxed);
                (index < *requests).then_some(index)
            }
        }
    }

    fn template_for(&self, index: u64) -> &RequestTemplate {
        if let (Schedule::Count { requests, .. }, Some(last)) =
            (&self.plan.schedule, &self.plan.final_request)
        {
            if index + 1 == *requests {
                return last;
            }
        }
        &self.plan.templates[(index % self.plan.templates.len() as u64) as usize]
    }
}

/// Runs the load and returns once every connection has finished (in-flight requests at
/// the deadline are allowed to complete).
pub async fn run_post_load(plan: PostLoad) -> LoadOutcome {
    assert!(!plan.templates.is_empty(), "a load needs request templates");
    let connections = plan.connections.max(1);
    let shared = Arc::new(SharedLoad {
        plan,
        next_request: AtomicU64::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|connection_index| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { connection_loop(&shared, connection_index as u64).await })
        })
        .collect();
    let mut outcome = LoadOutcome::default();
    for task in tasks {
        match task.await {
            Ok(partial) => outcome.merge(partial),
            Err(error) => outcome.record_error(format!("load task failed: {error}")),
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

async fn connection_loop(shared: &SharedLoad, connection_index: u64) -> LoadOutcome {
    let plan = &shared.plan;
    let mut rng = Rng::from_clock(connection_index);
    let mut outcome = LoadOutcome::default();
    let mut connection: Option<HttpConnection> = None;
    let mut request = Vec::new();

    while let Some(index) = shared.claim().await {
        let template = shared.template_for(index);
        template.fill(&mut request, &mut rng, &plan.ids);
        // Retry the same request after a 429: a real client keeps its data.
        loop {
            let Some(open) = ensure_connected(&mut connection, plan.addr, &mut outcome).await
            else {
                if Instant::now() >= plan.schedule.stop_at() {
                    return outcome;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            };
            let sent_at = Instant::now();
            let answer = send_within(open, &request, "POST /events").await;
            let answered_at = Instant::now();
            match answer {
                Ok(response) if response.is_success() => {
                    let sent = template.events() as u64;
                    let accepted = accepted_count(response.body).unwrap_or(sent);
                    if accepted < sent {
                        // Events refused one by one (or taken as duplicates) mean the
                        // generator and the server disagree: that must not pass unseen.
                        outcome.record_error(format!(
                            "POST /events accepted {accepted} of {sent} events: {}",
                            response.body_excerpt()
                        ));
                    }
                    outcome.acknowledged_events += accepted;
                    outcome.acknowledged_requests += 1;
                    outcome.latencies_us.push(micros(answered_at - sent_at));
                    if let (Some(prober), Some(id)) =
                        (&plan.probes, template.first_client_id(&request))
                    {
                        prober.submit(id.to_owned(), answered_at);
                    }
                    break;
                }
                Ok(response) if response.status == 429 => {
                    outcome.rejected_429 += 1;
                    let wait = response.retry_after.unwrap_or(DEFAULT_BACKOFF);
                    if answered_at + wait >= plan.schedule.stop_at() {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
                unexpected => {
                    if outcome.record_unexpected("POST /events", unexpected) {
                        connection = None;
                    }
                    break;
                }
            }
        }
    }
    outcome
}

/// Returns the open connection, opening one if needed; a failed connect is recorded.
pub async fn ensure_connected<'a>(
    connection: &'a mut Option<HttpConnection>,
    addr: SocketAddr,
    outcome: &mut LoadOutcome,
) -> Option<&'a mut HttpConnection> {
    if connection.is_none() {
        match HttpConnection::connect(addr).await {
            Ok(opened) => *connection = Some(opened),
            Err(error) => {
                outcome.record_error(format!("{error:#}"));
                return None;
            }
        }
    }
    connection.as_mut()
}

/// The `accepted` count of an ingest answer (`{"accepted":N,...}`), found by a byte search:
/// parsing the whole answer, which lists an id per event, would cost the generator CPU.
fn accepted_count(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"accepted\":";
    let start = body.windows(KEY.len()).position(|window| window == KEY)? + KEY.len();
    let digits = &body[start..];
    let digits = &digits[..digits
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count()];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Sends `request` on `open`, waiting at most [`REQUEST_TIMEOUT`]: the answer, or the error
/// line naming `what` when the connection failed or the time ran out (the connection is then
/// not to be used again).
async fn send_within<'c>(
    open: &'c mut HttpConnection,
    request: &[u8],
    what: &str,
) -> Result<Response<'c>, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, open.send(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(format!("{what}: {error:#}")),
        Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// A one-line description of an unexpected answer.
pub fn describe_refusal(what: &str, response: &Response<'_>) -> String {
    format!(
        "{what} answered {}: {}",
        response.status,
        response.body_excerpt()
    )
}

/// What the visibility probes measured.
#[derive(Debug, Default)]
pub struct ProbeOutcome {
    /// Time from the 202 of the probed event's request to the 200 of `GET /events/{id}`.
    pub lags_us: Vec<u32>,
    /// Probes not started because all probe slots were busy.
    pub skipped: u64,
    pub timed_out: u64,
    pub errors: LoadOutcome,
}

/// Measures how long acknowledged events take to become readable by id.
#[derive(Debug)]
pub struct Prober {
    addr: SocketAddr,
    slots: Arc<Semaphore>,
    idle_connections: Mutex<Vec<HttpConnection>>,
    outcome: Mutex<ProbeOutcome>,
}

impl Prober {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Prober {
            addr,
            slots: Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT)),
            idle_connections: Mutex::new(Vec::new()),
            outcome: Mutex::new(ProbeOutcome::default()),
        })
    }

    /// Probes started and not yet finished: events acknowledged and not yet visible.
    pub fn in_flight(&self) -> usize {
        MAX_PROBES_IN_FLIGHT - self.slots.available_permits()
    }

    /// Starts a probe for `id`, acknowledged at `acknowledged_at`, unless all slots are busy.
    pub fn submit(self: &Arc<Self>, id: String, acknowledged_at: Instant) {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            lock(&self.outcome).skipped += 1;
            return;
        };
        let prober = Arc::clone(self);
        tokio::spawn(async move {
            prober.probe(&id, acknowledged_at).await;
            drop(slot);
        });
    }

    async fn probe(&self, id: &str, acknowledged_at: Instant) {
        let request = get_request(&format!("/events/{id}"));
        let mut connection = lock(&self.idle_connections).pop();
        let mut errors = LoadOutcome::default();
        let mut lag = None;
        let mut timed_out = false;
        loop {
            if acknowledged_at.elapsed() >= PROBE_LIMIT {
                timed_out = true;
                break;
            }
            let Some(open) = ensure_connected(&mut connection, self.addr, &mut errors).await else {
                break;
            };
            let asked_at = Instant::now();
            match send_within(open, &request, "GET /events/{id}").await {
                Ok(response) if response.status == 200 => {
                    lag = Some(micros(acknowledged_at.elapsed()));
                    break;
                }
                Ok(response) if response.status == 429 => {
                    let pause = response.retry_after.unwrap_or(Duration::from_millis(10));
                    tokio::time::sleep(pause).await;
                }
                Ok(response) if matches!(response.status, 404 | 503) => {
                    // Not visible yet (503: "not yet indexed" after the server held the query
                    // for its read wait). If it answered faster than that, pause briefly
                    // rather than spin on it; Retry-After would distort the measured lag.
                    if asked_at.elapsed() < Duration::from_millis(50) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                unexpected => {
                    if errors.record_unexpected("GET /events/{id}", unexpected) {
                        connection = None;
                    }
                    break;
                }
            }
        }
        if let Some(open) = connection {
            lock(&self.idle_connections).push(open);
        }
        let mut outcome = lock(&self.outcome);
        outcome.lags_us.extend(lag);
        outcome.timed_out += u64::from(timed_out);
        outcome.errors.merge(errors);
    }

    /// Waits for the probes still running (bounded by the probe limit) and returns the
    /// results.
    pub async fn finish(&self) -> ProbeOutcome {
        let all_slots = MAX_PROBES_IN_FLIGHT as u32;
        let waited = tokio::time::timeout(
            PROBE_LIMIT + REQUEST_TIMEOUT,
            self.slots.acquire_many(all_slots),
        )
        .await;
        let mut outcome = std::mem::take(&mut *lock(&self.outcome));
        if !matches!(waited, Ok(Ok(_))) {
            outcome
                .errors
                .record_error("visibility probes still running at the end".to_owned());
        }
        outcome
    }
}

/// Locks a mutex, tolerating poisoning: the data are counters that stay meaningful.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_count_is_read_from_the_ingest_answer() {
        assert_eq!(
            accepted_count(br#"{"accepted":1000,"duplicates":0,"ids":["a"]}"#),
            Some(1000)
        );
        assert_eq!(accepted_count(br#"{"ids":[],"accepted":7}"#), Some(7));
        assert_eq!(accepted_count(br#"{"accepted":"many"}"#), None);
        assert_eq!(accepted_count(b""), None);
    }
}
