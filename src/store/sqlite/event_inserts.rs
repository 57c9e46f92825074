//! Stores a batch's events in their partitions' tables, many rows per `INSERT`
//! ([`multi_row`](super::multi_row)).
//!
//! `INSERT OR IGNORE` skips an event whose id the partition holds already; one statement
//! for many rows says only how many went in. An event whose seq is new to the table went in
//! exactly when its seq is there afterwards, so a statement that inserted fewer than all its
//! rows is followed by a lookup of each of their seqs. An event whose seq the table may
//! hold already (a batch stored again after a crash) is stored on its own, as before.

use anyhow::Result;
use foldhash::HashMap;
use rusqlite::{Connection, Statement};

use super::event_ids::StoredId;
use super::multi_row;
use super::partitions::Partition;
use super::query::COLUMNS;
use crate::event::StoredEvent;
use crate::store::partitioning::TimeRange;

/// The columns of [`COLUMNS`], bound for each row.
const COLUMN_COUNT: usize = 10;

/// A batch's inserts, on the writer's connection within the batch's transaction.
pub(super) struct EventInserts<'c> {
    connection: &'c Connection,
    /// The highest seq each partition held before the batch (`None`: none), looked up once
    /// per batch: the batch's seqs are all different, so one above it is new to the table
    /// however many of the batch's runs went in before.
    highest_seq: HashMap<TimeRange, Option<i64>>,
}

impl<'c> EventInserts<'c> {
    pub fn new(connection: &'c Connection) -> Self {
        EventInserts {
            connection,
            highest_seq: HashMap::default(),
        }
    }

    /// Stores `events`, which all fall in `partition`; `packed_ids` says how the partition
    /// holds ids. Pushes onto `inserted`, for each event, whether it went in (`false`: the
    /// partition holds its id already).
    pub fn insert_run(
        &mut self,
        partition: Partition,
        packed_ids: bool,
        events: &[StoredEvent],
        inserted: &mut Vec<bool>,
    ) -> Result<()> {
        let connection = self.connection;
        let table = partition.events_table();
        let highest_seq = match self.highest_seq.get(&partition.range) {
            Some(&highest) => highest,
            None => {
                let highest = connection
                    .prepare_cached(&format!("SELECT max(seq) FROM {table}"))?
                    .query_row([], |row| row.get(0))?;
                *self.highest_seq.entry(partition.range).or_insert(highest)
            }
        };
        // Where the stretch of events whose seqs are new to the table, not yet stored,
        // starts.
        let mut new_from = 0;
        for (index, event) in events.iter().enumerate() {
            if highest_seq.is_some_and(|highest| event.seq as i64 <= highest) {
                insert_new(
                    connection,
                    &table,
                    packed_ids,
                    &events[new_from..index],
                    inserted,
                )?;
                let one = std::slice::from_ref(event);
                insert_rows(connection, &table, packed_ids, one, |_, changed| {
                    inserted.push(changed > 0);
                    Ok(())
                })?;
                new_from = index + 1;
            }
        }
        insert_new(
            connection,
            &table,
            packed_ids,
            &events[new_from..],
            inserted,
        )
    }
}

/// Stores `events`, whose seqs are new to `table`, by statements of
/// [`multi_row::MOST_ROWS`] rows or fewer, pushing onto `inserted` whether each went in.
fn insert_new(
    connection: &Connection,
    table: &str,
    packed_ids: bool,
    events: &[StoredEvent],
    inserted: &mut Vec<bool>,
) -> Result<()> {
    insert_rows(connection, table, packed_ids, events, |chunk, changed| {
        if changed == chunk.len() {
            inserted.extend(std::iter::repeat_n(true, chunk.len()));
        } else {
            let mut present =
                connection.prepare_cached(&format!("SELECT 1 FROM {table} WHERE seq = ?"))?;
            for event in chunk {
                inserted.push(present.exists([event.seq as i64])?);
            }
        }
        Ok(())
    })
}

/// Stores `events` with `INSERT OR IGNORE`, many per statement; hands `each` every chunk
/// with how many of its events went in.
fn insert_rows(
    connection: &Connection,
    table: &str,
    packed_ids: bool,
    events: &[StoredEvent],
    each: impl FnMut(&[StoredEvent], usize) -> Result<()>,
) -> Result<()> {
    let head = format!("INSERT OR IGNORE INTO {table} ({COLUMNS})");
    multi_row::execute(
        connection,
        &head,
        COLUMN_COUNT,
        events,
        |insert, before, event| bind_event(insert, before, packed_ids, event),
        each,
    )
}

/// Binds `event`'s columns to the parameters after the first `before`.
fn bind_event(
    insert: &mut Statement,
    before: usize,
    packed_ids: bool,
    event: &StoredEvent,
) -> rusqlite::Result<()> {
    insert.raw_bind_parameter(before + 1, event.seq as i64)?;
    insert.raw_bind_parameter(before + 2, StoredId::new(&event.id, packed_ids))?;
    insert.raw_bind_parameter(before + 3, event.id_from_client)?;
    insert.raw_bind_parameter(before + 4, &event.kind)?;
    insert.raw_bind_parameter(before + 5, event.timestamp_ms)?;
    insert.raw_bind_parameter(before + 6, event.received_at_ms)?;
    insert.raw_bind_parameter(before + 7, &event.service)?;
    insert.raw_bind_parameter(before + 8, &event.user_id)?;
    insert.raw_bind_parameter(before + 9, &event.message)?;
    insert.raw_bind_parameter(before + 10, &event.metadata)
}
