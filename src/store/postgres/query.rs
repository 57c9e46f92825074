//! Query building: statements assembled with numbered parameters ([`Sql`]), the conditions
//! a filter and a page position turn into, and events and rollup rows decoded from rows.

use anyhow::{Context, Result};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::event::StoredEvent;
use crate::store::{EventFilter, Order, Position, RollupRow};

/// An events table's columns, in the order [`event_from_row`] reads them.
pub(super) const COLUMNS: &str =
    "seq, id, id_from_client, type, ts, received_at, service, user_id, message, metadata";

/// A count or seq as a PostgreSQL bigint: past `i64::MAX` means "more than any table holds".
pub(super) fn to_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

type Param = Box<dyn ToSql + Send + Sync>;

/// A statement being built and its parameters, numbered as they are added.
pub(super) struct Sql {
    pub(super) text: String,
    values: Vec<Param>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Adds a parameter; returns its placeholder (`$n`).
    pub(super) fn param(&mut self, value: impl ToSql + Send + Sync + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Appends ` AND ...` for `filter` and, when paging, for "strictly after `after` in
/// `order`": the one place that turns a query into SQL conditions.
pub(super) fn push_conditions(
    sql: &mut Sql,
    filter: &EventFilter,
    after: Option<(Position, Order)>,
) {
    for (column, value) in [
        ("type", &filter.kind),
        ("service", &filter.service),
        ("user_id", &filter.user_id),
    ] {
        if let Some(value) = value {
            let value = sql.param(value.as_bytes().to_vec());
            sql.push(&format!(" AND {column} = {value}"));
        }
    }
    if let Some(from) = filter.from_ms {
        let from = sql.param(from);
        sql.push(&format!(" AND ts >= {from}"));
    }
    if let Some(to) = filter.to_ms {
        let to = sql.param(to);
        sql.push(&format!(" AND ts < {to}"));
    }
    if let Some(max_seq) = filter.max_seq {
        let max_seq = sql.param(to_i64(max_seq));
        sql.push(&format!(" AND seq <= {max_seq}"));
    }
    if let Some((after, order)) = after {
        // The plain `ts` bound skips the partitions before the position; the row comparison
        // is read off the indexes, which all end in (ts, seq).
        let compare = if order == Order::Desc { "<" } else { ">" };
        let ts = sql.param(after.timestamp_ms);
        let seq = sql.param(to_i64(after.seq));
        sql.push(&format!(
            " AND ts {compare}= {ts} AND (ts, seq) {compare} ({ts}, {seq})"
        ));
    }
}

/// `ORDER BY` keyword for `order`.
pub(super) fn direction(order: Order) -> &'static str {
    match order {
        Order::Desc => "DESC",
        Order::Asc => "ASC",
    }
}

/// A string stored as bytes (see the schema): UTF-8, since only strings are stored.
pub(super) fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).context("a string in the store is not UTF-8")
}

fn optional_text(bytes: Option<Vec<u8>>) -> Result<Option<String>> {
    bytes.map(text).transpose()
}

pub(super) fn event_from_row(row: &Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.try_get::<_, i64>(0)? as u64,
        id: text(row.try_get(1)?)?,
        id_from_client: row.try_get(2)?,
        kind: text(row.try_get(3)?)?,
        timestamp_ms: row.try_get(4)?,
        received_at_ms: row.try_get(5)?,
        service: optional_text(row.try_get(6)?)?,
        user_id: optional_text(row.try_get(7)?)?,
        message: optional_text(row.try_get(8)?)?,
        metadata: row.try_get(9)?,
    })
}

pub(super) fn rollup_row(row: &Row) -> Result<RollupRow> {
    let has_service: bool = row.try_get(2)?;
    Ok(RollupRow {
        bucket_ms: row.try_get(0)?,
        kind: text(row.try_get(1)?)?,
        service: if has_service {
            Some(text(row.try_get(3)?)?)
        } else {
            None
        },
        count: row.try_get::<_, i64>(4)? as u64,
    })
}
