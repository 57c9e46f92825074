//! The export on PostgreSQL: every page read on one connection in one `REPEATABLE READ READ
//! ONLY` transaction, so that the export is one snapshot even when it pages through many
//! batches while other workers commit (lower seqs may commit after higher ones in a cluster)
//! or retention deletes. The connection is the pool's for the export's duration.

use anyhow::Result;
use tokio::sync::mpsc;

use super::pool::{Connection, Pool};
use super::query::event_from_row;
use super::query_sql;
use crate::event::StoredEvent;
use crate::store::{EventFilter, EventQuery, Order, Position};

pub(super) async fn export(
    pool: &Pool,
    filter: EventFilter,
    page: usize,
    pages: mpsc::Sender<Result<Vec<StoredEvent>>>,
) {
    let mut connection = match pool.get().await {
        Ok(connection) => connection,
        Err(err) => {
            let _ = pages.send(Err(err)).await;
            return;
        }
    };
    let begun = connection
        .client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await;
    let walked = match begun {
        Ok(()) => walk(&mut connection, filter, page, &pages).await,
        Err(err) => Err(err.into()),
    };
    // Ended whatever happened, before the connection goes back to the pool (read only:
    // nothing to commit). A connection that cannot end it is broken and not reused.
    let ended = connection.client.batch_execute("ROLLBACK").await;
    if let Err(err) = walked.and(ended.map_err(anyhow::Error::from)) {
        let _ = pages.send(Err(err)).await;
    }
}

/// Sends the pages of the snapshot until the last (a short one) or until `pages` is closed.
async fn walk(
    connection: &mut Connection,
    filter: EventFilter,
    page: usize,
    pages: &mpsc::Sender<Result<Vec<StoredEvent>>>,
) -> Result<()> {
    let mut query = EventQuery {
        filter,
        order: Order::Asc,
        after: None,
        limit: page,
        offset: 0,
    };
    loop {
        let sql = query_sql(&query);
        let statement = connection.prepare(&sql.text).await?;
        let rows = connection.client.query(&statement, &sql.params()).await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let last = match events.last() {
            Some(last) if events.len() == page => Some(Position::of(last)),
            _ => None,
        };
        if pages.send(Ok(events)).await.is_err() || last.is_none() {
            return Ok(());
        }
        query.after = last;
    }
}
