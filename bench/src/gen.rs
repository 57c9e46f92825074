//! Pre-serialized event requests for the load generator.
//!
//! The load generator shares two cores with the server, so it must not spend them on
//! JSON serialization. A [`RequestTemplate`] holds the complete HTTP request bytes, built
//! once, with fixed-width slots (timestamp, type, service, user and optionally a client
//! id) whose offsets are remembered; [`RequestTemplate::fill`] copies the bytes and patches
//! the slots, which costs a memcpy and a few digit writes per event. Because every slot has
//! a fixed width, `Content-Length` never changes. An [`EventShape`] chooses how many event
//! types there are (and so the width of the type slot) and how far back timestamps reach.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Event types are `type-00` .. `type-19` unless an [`EventShape`] says otherwise.
pub const EVENT_TYPES: u64 = 20;
/// Services are `svc-00` .. `svc-49`.
pub const SERVICES: u64 = 50;
/// Users are `user-000000` .. `user-099999`.
pub const USERS: u64 = 100_000;
/// Length of a client id: a UUIDv4 in its canonical form, as the Segment and PostHog SDKs
/// send message ids (`8-4-4-4-12` lowercase hex digits).
pub const CLIENT_ID_LEN: usize = 36;

/// Digits in a millisecond epoch timestamp (true until the year 2286).
const TIMESTAMP_DIGITS: usize = 13;

/// A small, fast PRNG (wyrand). Picking users and query kinds needs speed, not
/// cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn with_seed(seed: u64) -> Self {
        Rng(mix64(seed))
    }

    /// Seeds from the clock and process id; `stream` keeps generators made in the same
    /// nanosecond (one per connection) apart.
    pub fn from_clock(stream: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        Rng::with_seed(nanos ^ pid.rotate_left(32) ^ mix64(stream.wrapping_add(1)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((product >> 64) as u64) ^ (product as u64)
    }

    /// Uniform in `0..bound` (multiply-shift; the bias is negligible for small bounds).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Bijective 64-bit mixer (the MurmurHash3 finalizer): distinct inputs give distinct
/// outputs, so mixing a counter yields ids that look random yet can never repeat.
fn mix64(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// Hands out unique, random-looking client ids, shared by all connections of a run.
#[derive(Debug)]
pub struct IdSource {
    nonce: u64,
    next_counter: AtomicU64,
    next_event: AtomicU64,
}

impl IdSource {
    pub fn new(rng: &mut Rng) -> Self {
        IdSource {
            nonce: rng.next_u64(),
            next_counter: AtomicU64::new(0),
            next_event: AtomicU64::new(0),
        }
    }

    /// Reserves `count` consecutive event positions (for timestamps in order) with one atomic
    /// add; returns the first.
    fn reserve_events(&self, count: u64) -> u64 {
        self.next_event.fetch_add(count, Ordering::Relaxed)
    }

    /// Reserves `count` consecutive counters with one atomic add (one per request, not
    /// one per event) and returns the first.
    fn reserve(&self, count: u64) -> u64 {
        self.next_counter.fetch_add(count, Ordering::Relaxed)
    }

    /// Writes the id of `counter`: a UUIDv4 whose 122 free bits are the mixed counter (64,
    /// first, so ids spread over the whole key space as random ones do, and never repeat)
    /// then the run's nonce.
    fn write_id(&self, counter: u64, slot: &mut [u8]) {
        let free = (u128::from(mix64(counter)) << 58) | u128::from(self.nonce >> 6);
        let uuid = (free >> 74) << 80 // 48 bits
            | 0x4 << 76 // version
            | ((free >> 62) & 0xfff) << 64 // 12 bits
            | 0b10 << 62 // variant
            | (free & ((1 << 62) - 1)); // 62 bits
        uuid::Uuid::from_u128(uuid)
            .hyphenated()
            .encode_lower(&mut slot[..CLIENT_ID_LEN]);
    }
}

/// Which events of a request carry a client-supplied `"id"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIds {
    /// None: the server assigns every id.
    None,
    /// Only the first event, which serves as a visibility probe.
    FirstEventOnly,
    /// Every event carries a random unique id.
    Every,
}

/// What the generated events look like beyond their fixed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventShape {
    /// Event types are `type-0` .. `type-<types - 1>`, zero-padded to the width of the
    /// largest (at least two digits: `type-00`); each event gets one uniformly at random.
    pub types: u64,
    /// Each timestamp is the time of filling minus a uniform random `0..spread` ms; 0 gives
    /// the time of filling itself.
    pub timestamp_spread_ms: u64,
    /// When non-zero, timestamps sweep the spread in order instead, from its start to now
    /// over this many events (shared by all connections through the [`IdSource`]): a past
    /// day replayed in order, as it would have arrived, rather than shuffled.
    pub in_order_over_events: u64,
    /// When non-zero, timestamps are counted back from this fixed time (epoch ms) instead
    /// of the time of filling: a chosen past day.
    pub anchor_ms: u64,
    /// How the events are sent: to `POST /events`, or as Segment `track` calls.
    pub wire: Wire,
}

/// The API a request speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wire {
    /// `POST /events` with Eventide's fields.
    #[default]
    Eventide,
    /// `POST /v1/batch`, `{"batch": [...]}` of Segment `track` calls carrying the same
    /// content (`event`, `messageId`, `userId`, `properties`).
    Segment,
}

impl Wire {
    /// The request line's path, the body's start and end around the events.
    fn framing(self, as_array: bool) -> (&'static str, &'static [u8], &'static [u8]) {
        match (self, as_array) {
            (Wire::Eventide, false) => ("/events", b"", b""),
            (Wire::Eventide, true) => ("/events", b"[", b"]"),
            (Wire::Segment, _) => ("/v1/batch", br#"{"batch":["#, b"]}"),
        }
    }

    /// How an event's id, type, user id and metadata begin in this API.
    fn keys(self) -> [&'static str; 4] {
        match self {
            Wire::Eventide => [
                r#""id":""#,
                r#""type":"type-"#,
                r#"","user_id":"user-"#,
                r#","metadata":"#,
            ],
            Wire::Segment => [
                r#""messageId":""#,
                r#""type":"track","event":"type-"#,
                r#"","userId":"user-"#,
                r#","properties":"#,
            ],
        }
    }
}

impl Default for EventShape {
    /// 20 types (`type-00` .. `type-19`), timestamps at the time of sending.
    fn default() -> Self {
        EventShape {
            types: EVENT_TYPES,
            timestamp_spread_ms: 0,
            in_order_over_events: 0,
            anchor_ms: 0,
            wire: Wire::Eventide,
        }
    }
}

impl EventShape {
    /// Digits of the type slot: those of the largest type, at least two.
    pub fn type_digits(&self) -> usize {
        let largest = self.types.max(1) - 1;
        (largest.checked_ilog10().unwrap_or(0) as usize + 1).max(2)
    }

    /// The name of type number `index`, as the generator writes it.
    pub fn type_name(&self, index: u64) -> String {
        format!("type-{index:0width$}", width = self.type_digits())
    }
}

/// Offsets (into the request bytes) of one event's patchable slots.
#[derive(Debug, Clone)]
struct EventSlots {
    client_id: Option<usize>,
    type_digits: usize,
    timestamp: usize,
    service_digits: usize,
    user_digits: usize,
}

/// A complete ingest request (`POST /events`, or Segment's `/v1/batch`) with patchable
/// slots; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    bytes: Vec<u8>,
    slots: Vec<EventSlots>,
    shape: EventShape,
}

/// Request paths and the HTTP methods the fake log lines mention.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/items"),
    ("POST", "/api/orders"),
    ("GET", "/api/users/profile"),
    ("PUT", "/api/cart/items"),
    ("DELETE", "/api/sessions"),
    ("GET", "/api/search"),
    ("POST", "/api/payments/authorize"),
    ("GET", "/api/catalog/categories"),
];
/// Mostly successes, like real access logs.
const STATUSES: &[u16] = &[200, 200, 200, 200, 201, 204, 304, 400, 404, 500];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0 (compatible)",
];

impl RequestTemplate {
    /// Builds a request carrying `events` events of the default [`EventShape`]: a single
    /// JSON object when `events == 1` and `as_array` is false, otherwise a JSON array.
    pub fn build(events: usize, as_array: bool, client_ids: ClientIds, rng: &mut Rng) -> Self {
        Self::build_with(events, as_array, client_ids, EventShape::default(), rng)
    }

    /// [`build`](Self::build) with events of the given `shape`.
    pub fn build_with(
        events: usize,
        as_array: bool,
        client_ids: ClientIds,
        shape: EventShape,
        rng: &mut Rng,
    ) -> Self {
        assert!(events >= 1, "a request carries at least one event");
        assert!(shape.types >= 1, "events need at least one type");
        assert!(as_array || events == 1, "several events need an array");
        let mut body = Vec::with_capacity(events * 420);
        let mut slots = Vec::with_capacity(events);
        let (path, opening, closing) = shape.wire.framing(as_array);
        body.extend_from_slice(opening);
        for index in 0..events {
            if index > 0 {
                body.push(b',');
            }
            let wants_id = match client_ids {
                ClientIds::None => false,
                ClientIds::FirstEventOnly => index == 0,
                ClientIds::Every => true,
            };
            let keys = shape.wire.keys();
            slots.push(append_event(
                &mut body,
                wants_id,
                shape.type_digits(),
                keys,
                rng,
            ));
        }
        body.extend_from_slice(closing);

        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            super::key::auth_header(),
            body.len()
        );
        let mut bytes = head.into_bytes();
        let body_offset = bytes.len();
        bytes.extend_from_slice(&body);
        for slot in &mut slots {
            slot.client_id = slot.client_id.map(|offset| offset + body_offset);
            slot.type_digits += body_offset;
            slot.timestamp += body_offset;
            slot.service_digits += body_offset;
            slot.user_digits += body_offset;
        }

        let mut template = RequestTemplate {
            bytes,
            slots,
            shape,
        };
        // The placeholders (zero-padded timestamps, zero ids) are not valid JSON until
        // patched; patch the template itself so it is a valid request as it stands.
        let ids = IdSource::new(rng);
        let mut patched = Vec::new();
        template.fill(&mut patched, rng, &ids);
        template.bytes = patched;
        template
    }

    /// How many events the request carries.
    pub fn events(&self) -> usize {
        self.slots.len()
    }

    /// Copies the request into `out` with fresh values in every slot: the current time
    /// (less a random part of the shape's spread), a random type, service and user, and new
    /// unique ids where the template has id slots.
    pub fn fill(&self, out: &mut Vec<u8>, rng: &mut Rng, ids: &IdSource) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        let now_ms = match self.shape.anchor_ms {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as u64)
                .unwrap_or(0),
            anchor => anchor,
        };
        let id_slots = self
            .slots
            .iter()
            .filter(|slot| slot.client_id.is_some())
            .count();
        let mut next_id = ids.reserve(id_slots as u64);
        let type_digits = self.shape.type_digits();
        let spread = self.shape.timestamp_spread_ms;
        let in_order_over = self.shape.in_order_over_events;
        let mut position = if in_order_over > 0 {
            ids.reserve_events(self.slots.len() as u64)
        } else {
            0
        };
        for slot in &self.slots {
            if let Some(offset) = slot.client_id {
                ids.write_id(next_id, &mut out[offset..offset + CLIENT_ID_LEN]);
                next_id += 1;
            }
            write_decimal(
                &mut out[slot.type_digits..slot.type_digits + type_digits],
                rng.below(self.shape.types),
            );
            let timestamp = if spread == 0 {
                now_ms
            } else if in_order_over > 0 {
                let done = u128::from(position.min(in_order_over));
                position += 1;
                let back = u128::from(spread) * (u128::from(in_order_over) - done)
                    / u128::from(in_order_over);
                now_ms.saturating_sub(back as u64)
            } else {
                now_ms.saturating_sub(rng.below(spread))
            };
            write_decimal(
                &mut out[slot.timestamp..slot.timestamp + TIMESTAMP_DIGITS],
                timestamp,
            );
            write_decimal(
                &mut out[slot.service_digits..slot.service_digits + 2],
                rng.below(SERVICES),
            );
            write_decimal(
                &mut out[slot.user_digits..slot.user_digits + 6],
                rng.below(USERS),
            );
        }
    }

    /// The client id of the first event in a request produced by [`fill`](Self::fill),
    /// if the template gives that event one.
    pub fn first_client_id<'a>(&self, filled: &'a [u8]) -> Option<&'a str> {
        let offset = self.slots.first()?.client_id?;
        std::str::from_utf8(filled.get(offset..offset + CLIENT_ID_LEN)?).ok()
    }

    /// Size of the JSON body in bytes.
    pub fn body_len(&self) -> usize {
        let head_end = self
            .bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .map_or(0, |position| position + 4);
        self.bytes.len() - head_end
    }
}

/// Appends one event object with a type slot of `type_digits` digits and returns its slot
/// offsets (relative to `body`).
fn append_event(
    body: &mut Vec<u8>,
    wants_id: bool,
    type_digits: usize,
    [id_key, type_key, user_key, metadata_key]: [&str; 4],
    rng: &mut Rng,
) -> EventSlots {
    fn placeholder(body: &mut Vec<u8>, width: usize) -> usize {
        let offset = body.len();
        body.resize(offset + width, b'0');
        offset
    }

    body.push(b'{');
    let client_id = if wants_id {
        body.extend_from_slice(id_key.as_bytes());
        let offset = placeholder(body, CLIENT_ID_LEN);
        body.extend_from_slice(br#"","#);
        Some(offset)
    } else {
        None
    };
    body.extend_from_slice(type_key.as_bytes());
    let type_digits = placeholder(body, type_digits);
    body.extend_from_slice(br#"","timestamp":"#);
    let timestamp = placeholder(body, TIMESTAMP_DIGITS);
    body.extend_from_slice(br#","service":"svc-"#);
    let service_digits = placeholder(body, 2);
    body.extend_from_slice(user_key.as_bytes());
    let user_digits = placeholder(body, 6);

    let (method, path) = ROUTES[rng.below(ROUTES.len() as u64) as usize];
    let status = STATUSES[rng.below(STATUSES.len() as u64) as usize];
    let duration_ms = 1 + rng.below(900);
    let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let user_agent = USER_AGENTS[rng.below(USER_AGENTS.len() as u64) as usize];
    let request_id = rng.next_u64() as u32;
    let response_bytes = 200 + rng.below(60_000);
    let cache = if rng.below(4) == 0 { "hit" } else { "miss" };
    let rest = format!(
        r#"","message":"{method} {path} {status} in {duration_ms}ms (request {request_id:08x}, {response_bytes} bytes, cache {cache}, attempt 1)"{metadata_key}{{"path":"{path}","status":{status},"duration_ms":{duration_ms},"region":"{region}","ua":"{user_agent}"}}}}"#
    );
    body.extend_from_slice(rest.as_bytes());

    EventSlots {
        client_id,
        type_digits,
        timestamp,
        service_digits,
        user_digits,
    }
}

/// Writes `value` as zero-padded decimal filling `slot` exactly (high digits dropped).
fn write_decimal(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn body_json(request: &[u8]) -> serde_json::Value {
        let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&request[..head_end]).unwrap();
        let declared: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(declared, request.len() - head_end);
        serde_json::from_slice(&request[head_end..]).unwrap()
    }

    /// What each test starts from: a generator seeded with `seed`, a template `build` makes
    /// with it, and the ids it then fills in.
    fn seeded(
        seed: u64,
        build: impl FnOnce(&mut Rng) -> RequestTemplate,
    ) -> (Rng, RequestTemplate, IdSource) {
        let mut rng = Rng::with_seed(seed);
        let template = build(&mut rng);
        let ids = IdSource::new(&mut rng);
        (rng, template, ids)
    }

    #[test]
    fn filled_batches_are_valid_json_with_unique_ids_and_realistic_size() {
        let (mut rng, template, ids) = seeded(7, |rng| {
            RequestTemplate::build(100, true, ClientIds::Every, rng)
        });
        let mut seen = HashSet::new();
        let mut request = Vec::new();
        for _ in 0..3 {
            template.fill(&mut request, &mut rng, &ids);
            let events = body_json(&request);
            let events = events.as_array().unwrap();
            assert_eq!(events.len(), 100);
            for event in events {
                let id = event["id"].as_str().unwrap();
                let uuid = uuid::Uuid::try_parse(id).unwrap();
                assert_eq!(uuid.hyphenated().to_string(), id, "canonical form");
                assert_eq!(uuid.get_version_num(), 4, "{id}");
                assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
                assert!(seen.insert(id.to_owned()), "duplicate id {id}");
                assert!(event["type"].as_str().unwrap().starts_with("type-"));
                assert!(event["user_id"].as_str().unwrap().starts_with("user-"));
                assert!(event["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
            }
        }

        let plain = RequestTemplate::build(1000, true, ClientIds::None, &mut rng);
        let average = plain.body_len() / plain.events();
        assert!(
            (340..=420).contains(&average),
            "average event size {average}"
        );
    }

    #[test]
    fn shapes_set_the_type_width_and_the_timestamp_spread() {
        assert_eq!(EventShape::default().type_digits(), 2);
        assert_eq!(EventShape::default().type_name(7), "type-07");
        let wide = EventShape {
            types: 1000,
            ..EventShape::default()
        };
        assert_eq!(wide.type_digits(), 3);
        assert_eq!(wide.type_name(7), "type-007");
        let narrow = EventShape {
            types: 1,
            ..EventShape::default()
        };
        assert_eq!(narrow.type_name(0), "type-00");

        let day_ms = 24 * 3_600_000;
        let shape = EventShape {
            types: 1000,
            timestamp_spread_ms: day_ms,
            ..EventShape::default()
        };
        let (mut rng, template, ids) = seeded(5, |rng| {
            RequestTemplate::build_with(1000, true, ClientIds::None, shape, rng)
        });
        let mut request = Vec::new();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        template.fill(&mut request, &mut rng, &ids);
        let after = before + 60_000;
        let events = body_json(&request);
        let mut types = HashSet::new();
        let mut oldest = u64::MAX;
        for event in events.as_array().unwrap() {
            let kind = event["type"].as_str().unwrap();
            assert_eq!(kind.len(), "type-000".len(), "{kind}");
            assert!(kind[5..].parse::<u64>().unwrap() < 1000);
            types.insert(kind.to_owned());
            let timestamp = event["timestamp"].as_u64().unwrap();
            assert!(timestamp + day_ms > before && timestamp <= after);
            oldest = oldest.min(timestamp);
        }
        assert!(types.len() > 400, "only {} distinct types", types.len());
        assert!(before - oldest > day_ms / 2, "timestamps not spread");
    }

    #[test]
    fn single_event_template_is_an_object_and_exposes_its_probe_id() {
        let (mut rng, template, ids) = seeded(11, |rng| {
            RequestTemplate::build(1, false, ClientIds::FirstEventOnly, rng)
        });
        let mut request = Vec::new();
        template.fill(&mut request, &mut rng, &ids);
        let event = body_json(&request);
        assert_eq!(
            event["id"].as_str(),
            template.first_client_id(&request),
            "probe id must match the id sent"
        );
    }
}
