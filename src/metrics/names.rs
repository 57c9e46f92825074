//! The names (event types, services) that the in-memory counts keep apart: at most a
//! configured number of each, so that no input can grow the counts without bound; events of
//! any other name are counted together under [`OTHER`].

use std::collections::HashMap;
use std::sync::Arc;

/// What the counts, and every report, call the events of names not counted on their own.
pub const OTHER: &str = "(other)";

/// A name's number in its [`Names`]; [`OTHER`] is always 0.
pub type NameId = u32;

/// How many types and services are counted on their own (`--max-tracked-types`,
/// `--max-tracked-services`); reports read from the store's rollups are folded to the
/// same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLimits {
    pub types: usize,
    pub services: usize,
}

/// Names numbered in the order first seen, at most `limit` of them besides [`OTHER`].
///
/// Whether a name is tracked is decided once, when it is first seen: a tracked name stays
/// tracked (its counts are exact from then on), and a name that comes when the limit is
/// reached is counted as [`OTHER`], every time. A name sent literally as `"(other)"` is
/// that same [`OTHER`]. Because lookups never consult the limit, a name can be made to be
/// tracked whatever the limit (as alert rules will need for the names they filter on) by
/// registering it past the limit check, without changing how counts are kept.
pub struct Names {
    limit: usize,
    ids: HashMap<Arc<str>, NameId>,
    names: Vec<Arc<str>>,
    /// Whether some name was refused: names not tracked may then have counts in [`OTHER`].
    folded: bool,
    /// Names tracked past the limit after some were refused ([`force`](Self::force)), with
    /// when: their counts before that are in [`OTHER`].
    forced_at: HashMap<NameId, i64>,
}

impl Names {
    pub fn new(limit: usize) -> Names {
        let other: Arc<str> = OTHER.into();
        Names {
            limit,
            ids: HashMap::from([(other.clone(), 0)]),
            names: vec![other],
            folded: false,
            forced_at: HashMap::new(),
        }
    }

    /// Tracks `name` whatever the limit (the names alert rules filter on); its counts are
    /// exact from `now_ms` on, and from the start if no name was refused before.
    pub fn force(&mut self, name: &str, now_ms: i64) -> NameId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as NameId;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        if self.folded {
            self.forced_at.insert(id, now_ms);
        }
        id
    }

    /// From when the counts of `id` are exact: `None` from the start.
    pub fn exact_from(&self, id: NameId) -> Option<i64> {
        self.forced_at.get(&id).copied()
    }

    /// The id of `name`, tracking it if it is new and the limit allows; [`OTHER`]'s if not.
    pub fn id(&mut self, name: &str) -> NameId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // `names` holds OTHER besides the tracked names.
        if self.names.len() > self.limit {
            self.folded = true;
            return 0;
        }
        let id = self.names.len() as NameId;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The id of `name` if it is tracked (or is [`OTHER`]).
    pub fn get(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: NameId) -> &str {
        &self.names[id as usize]
    }

    /// The number of ids: every id is below it.
    pub fn id_count(&self) -> usize {
        self.names.len()
    }

    /// Whether some name was counted as [`OTHER`] because the limit was reached.
    pub fn folded(&self) -> bool {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beyond_the_limit_are_other_and_stay_so() {
        let mut names = Names::new(2);
        let a = names.id("a");
        let b = names.id("b");
        assert!(!names.folded());
        assert_eq!(names.id("c"), 0);
        assert!(names.folded());
        assert_eq!((names.id("a"), names.id("b"), names.id("c")), (a, b, 0));
        assert_eq!((names.name(a), names.name(0)), ("a", OTHER));
        assert_eq!(names.get("c"), None);
        assert_eq!(names.id_count(), 3);
    }

    #[test]
    fn a_name_sent_as_other_is_other_and_takes_no_place() {
        let mut names = Names::new(1);
        assert_eq!(names.id(OTHER), 0);
        assert!(!names.folded());
        assert_ne!(names.id("a"), 0);
        assert_eq!(names.get(OTHER), Some(0));
    }

    #[test]
    fn a_limit_of_zero_counts_every_name_as_other() {
        let mut names = Names::new(0);
        assert_eq!(names.id("a"), 0);
        assert!(names.folded());
        assert_eq!(names.id_count(), 1);
    }
}
