//! The events table's partitions: each an aligned UTC day, month or year of event timestamps
//! (the rule is [`crate::store::partitioning`]'s, shared with the embedded store), named
//! after it (`events_20240115`, `events_202401`, `events_2024`), made by the writer when a
//! batch brings an event that none covers, and listed for retention.

use anyhow::{Context, Result};
use tokio_postgres::{Client, GenericClient};

use super::{quote_identifier, LockKey};
use crate::store::partitioning::{Layout, Span, TimeRange};
use crate::store::DAY_MS;

/// The partition's name for `range`.
pub(super) fn name(range: TimeRange) -> String {
    let date = range
        .start_date()
        .filter(|date| (0..=9999).contains(&date.year()));
    match (range.span, date) {
        (Span::Day, Some(date)) => format!(
            "events_{:04}{:02}{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        (Span::Month, Some(date)) => {
            format!("events_{:04}{:02}", date.year(), u8::from(date.month()))
        }
        (Span::Year, Some(date)) => format!("events_{:04}", date.year()),
        // Not for timestamps that events can have (years 0000 to 9999): by first day.
        _ => format!(
            "events_{}{}",
            &range.span.name()[..1],
            range.start_ms / DAY_MS
        )
        .replace('-', "m"),
    }
}

/// Creates partitions for the events at `events` (timestamp, receipt time) that none covers,
/// in a transaction of its own holding an advisory lock: the partitions are listed again
/// under the lock, so writers of several processes choose their ranges one after the other,
/// each seeing what the other made. Returns every partition that exists once it is done.
///
/// Each is made as a plain table and attached, which locks the parent in SHARE UPDATE
/// EXCLUSIVE mode: queries and other writers go on. `CREATE TABLE ... PARTITION OF` locks
/// it in ACCESS EXCLUSIVE mode until the commit, and a backfill makes tens of partitions at
/// once (20-80 ms each here, with their seven indexes): measured, a query waited 2 s behind
/// such a transaction, and `GET /events` took over 3 s during the 10,000-day backfill.
pub(super) async fn create(
    client: &mut Client,
    key: LockKey,
    events: &[(i64, i64)],
) -> Result<Layout> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LockKey::PARTITIONS, &key.0],
    )
    .await?;
    let mut layout = Layout::new(list(&tx).await?.into_iter().filter_map(|p| p.range));
    for &(ts, received_at_ms) in events {
        if layout.covering(ts).is_some() {
            continue;
        }
        let range = layout.new_range(ts, received_at_ms);
        let name = name(range);
        let table = quote_identifier(&name);
        // Attaching builds the partition's indexes from the parent's.
        tx.batch_execute(&format!(
            "CREATE TABLE {table} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             ALTER TABLE events ATTACH PARTITION {table} FOR VALUES FROM ({}) TO ({})",
            range.start_ms, range.end_ms
        ))
        .await
        .with_context(|| format!("creating the partition {name}"))?;
        layout.insert(range);
    }
    tx.commit().await?;
    Ok(layout)
}

/// A partition of the events table.
pub(super) struct Partition {
    pub(super) name: String,
    /// Where its range ends (exclusive); `None` when unbounded.
    pub(super) to_ms: Option<i64>,
    /// The day, month or year its bounds are (`None`: made by hand with other bounds; it is
    /// still routed to by PostgreSQL, just not known to the writer's layout).
    pub(super) range: Option<TimeRange>,
}

/// Every partition of the events table, oldest first.
pub(super) async fn list(client: &impl GenericClient) -> Result<Vec<Partition>> {
    // The bounds as PostgreSQL prints them: FOR VALUES FROM ('1705276800000') TO (...).
    let rows = client
        .query(
            r"SELECT c.relname::text, b[1]::bigint, b[2]::bigint
              FROM pg_inherits i
              JOIN pg_class c ON c.oid = i.inhrelid
              LEFT JOIN LATERAL regexp_match(
                  pg_get_expr(c.relpartbound, c.oid),
                  'FROM \(''(-?\d+)''\) TO \(''(-?\d+)''\)'
              ) AS b ON true
              WHERE i.inhparent = 'events'::regclass
              ORDER BY 2",
            &[],
        )
        .await
        .context("listing the event partitions")?;
    Ok(rows
        .iter()
        .map(|row| {
            let (from_ms, to_ms): (Option<i64>, Option<i64>) = (row.get(1), row.get(2));
            Partition {
                name: row.get(0),
                to_ms,
                range: from_ms
                    .zip(to_ms)
                    .and_then(|(from, to)| TimeRange::from_bounds(from, to)),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_after_their_range() {
        let at = 1_705_312_800_000; // 2024-01-15T10:00:00Z
        let named = |span| name(TimeRange::containing(at, span).unwrap());
        assert_eq!(named(Span::Day), "events_20240115");
        assert_eq!(named(Span::Month), "events_202401");
        assert_eq!(named(Span::Year), "events_2024");
        let before_0000 = TimeRange::containing(-62_167_219_200_001, Span::Day).unwrap();
        assert_eq!(name(before_0000), "events_dm719529");
    }
}
