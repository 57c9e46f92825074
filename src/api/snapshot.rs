//! What a read of events or counts sees: every event acknowledged before the request began,
//! once the indexer has it (waiting at most `--read-wait`), or else what is indexed by then,
//! which the answer says with `"partial": true` (read-your-writes, bounded).

use super::state::AppState;

/// The events a read includes.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// The highest `seq` the read includes; `None`: everything stored (a cluster's API node
    /// cannot know what the workers are about to store, so it does not wait for them).
    pub through: Option<u64>,
    /// Whether the read may miss events acknowledged before the request: the answer's
    /// `partial`.
    pub partial: bool,
}

impl Snapshot {
    /// Waits (at most `--read-wait`) for the index to have every event acknowledged so far.
    pub async fn take(state: &AppState) -> Snapshot {
        let read = state.ingest.read_position(state.read_wait).await;
        Snapshot {
            through: read.through,
            partial: !read.complete,
        }
    }
}
