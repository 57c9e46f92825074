//! Statements that write many rows at once.
//!
//! Within one statement SQLite keeps its cursors on a table and each of its indexes from row
//! to row, and a row that goes at the end of a B-tree is placed from where the previous one
//! went, without descending from the root again (`sqlite3BtreeIndexMoveto`'s check of the
//! last page). Events mostly go at the ends of their B-trees: the rowid (the seq), the time
//! index, server ids (UUIDv7) and the client ids' arrival index. With one statement per row, every row
//! descended every B-tree from its root (11% of the events' writer's instructions went with
//! that; README, the twelfth pass against the ceiling).

use anyhow::Result;
use rusqlite::{CachedStatement, Connection, Statement};

/// The most rows per statement. A power of two: a shorter run is written by statements of
/// the powers of two it is made of, so a table has a handful of statements to keep prepared
/// whatever the runs' lengths. At 64, one row in 64 descends from the root.
pub(super) const MOST_ROWS: usize = 64;

/// `rows` cut into the runs that statements write: [`MOST_ROWS`] at a time, then the powers
/// of two the rest is made of, longest first.
fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let (chunk, rest) = rows.split_at(MOST_ROWS.min(1 << rows.len().ilog2()));
        rows = rest;
        Some(chunk)
    })
}

/// Writes `rows` by statements of [`chunks`], each `{head} VALUES (?, ...), ...` with a row of
/// `columns` parameters for each of the chunk's rows, bound by `bind` (given the statement,
/// the number of parameters before the row's and the row); hands `each` every chunk with how
/// many rows its statement changed. A statement is looked up once for a run of chunks of one
/// length, not for each: its SQL (a few kilobytes at 64 rows) was built and hashed for every
/// chunk, which cost 3.5% of the events' writer's instructions and 3.2% of the user index's.
pub(super) fn execute<T>(
    connection: &Connection,
    head: &str,
    columns: usize,
    rows: &[T],
    bind: impl Fn(&mut Statement, usize, &T) -> rusqlite::Result<()>,
    mut each: impl FnMut(&[T], usize) -> Result<()>,
) -> Result<()> {
    let mut prepared: Option<(usize, CachedStatement)> = None;
    for chunk in chunks(rows) {
        let statement = match &mut prepared {
            Some((len, statement)) if *len == chunk.len() => statement,
            _ => {
                let sql = format!("{head} VALUES {}", values(columns, chunk.len()));
                let statement = connection.prepare_cached(&sql)?;
                &mut prepared.insert((chunk.len(), statement)).1
            }
        };
        for (index, row) in chunk.iter().enumerate() {
            bind(statement, index * columns, row)?;
        }
        let changed = statement.raw_execute()?;
        each(chunk, changed)?;
    }
    Ok(())
}

/// The `VALUES` list of `rows` rows of `columns` parameters each: `(?, ?), (?, ?)`.
fn values(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(len: usize) -> Vec<usize> {
        chunks(&vec![0u8; len]).map(<[u8]>::len).collect()
    }

    #[test]
    fn runs_are_cut_into_powers_of_two_at_most_the_most() {
        assert_eq!(lengths(0), Vec::<usize>::new());
        assert_eq!(lengths(1), [1]);
        assert_eq!(lengths(64), [64]);
        assert_eq!(lengths(100), [64, 32, 4]);
        assert_eq!(lengths(200), [64, 64, 64, 8]);
        assert_eq!(lengths(63), [32, 16, 8, 4, 2, 1]);
    }

    #[test]
    fn values_lists_the_parameters_of_each_row() {
        assert_eq!(values(2, 3), "(?, ?), (?, ?), (?, ?)");
        assert_eq!(values(1, 1), "(?)");
    }
}
