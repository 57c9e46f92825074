//! The two state machines of alerting, as pure functions of time: a rule's alert
//! (inactive → pending for `for` → firing, kept firing for `keep_firing_for` after the
//! condition clears), and a notification group's log (what was announced, when the next
//! notice is due under `group_wait`, `group_interval` and `repeat_interval`). Both are kept
//! in the store, so a restart resumes them where they were.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::timing::Timing;

/// Where a rule's alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending,
    Firing,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// A rule's alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AlertState {
    pub phase: Phase,
    /// When the phase began (epoch ms; 0: never evaluated).
    pub since_ms: i64,
    /// Since when the condition has held without a break (pending and firing).
    pub holding_since_ms: Option<i64>,
    /// The last evaluation at which the condition held (for `keep_firing_for`).
    pub last_held_ms: Option<i64>,
    /// When the current (or last) firing began: its `startsAt`, which tells one firing from
    /// the next.
    pub starts_at_ms: Option<i64>,
    /// When the last firing ended (absent while firing).
    pub ends_at_ms: Option<i64>,
    /// The value observed at the last evaluation.
    pub value: Option<f64>,
    pub evaluated_ms: Option<i64>,
}

/// A change of an alert's phase, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Pending,
    Firing,
    /// Firing ended.
    Resolved,
    /// Pending ended without firing (a blip shorter than `for`).
    Cleared,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Pending => "pending",
            Change::Firing => "firing",
            Change::Resolved => "resolved",
            Change::Cleared => "cleared",
        }
    }
}

fn elapsed(from_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(from_ms)).unwrap_or(0))
}

impl AlertState {
    /// Takes one evaluation: whether the condition `holds` at `now_ms` with `value`.
    pub fn step(
        &mut self,
        now_ms: i64,
        holds: bool,
        value: f64,
        for_: Duration,
        keep_firing_for: Duration,
    ) -> Option<Change> {
        self.value = Some(value);
        self.evaluated_ms = Some(now_ms);
        if holds {
            self.last_held_ms = Some(now_ms);
            let holding_since = *self.holding_since_ms.get_or_insert(now_ms);
            match self.phase {
                Phase::Firing => None,
                Phase::Inactive if !for_.is_zero() => {
                    self.enter(Phase::Pending, now_ms);
                    Some(Change::Pending)
                }
                Phase::Pending if elapsed(holding_since, now_ms) < for_ => None,
                Phase::Inactive | Phase::Pending => {
                    self.enter(Phase::Firing, now_ms);
                    self.starts_at_ms = Some(now_ms);
                    self.ends_at_ms = None;
                    Some(Change::Firing)
                }
            }
        } else {
            self.holding_since_ms = None;
            match self.phase {
                Phase::Inactive => None,
                Phase::Pending => {
                    self.enter(Phase::Inactive, now_ms);
                    Some(Change::Cleared)
                }
                Phase::Firing => {
                    let last_held = self.last_held_ms.unwrap_or(now_ms);
                    if !keep_firing_for.is_zero() && elapsed(last_held, now_ms) < keep_firing_for {
                        return None;
                    }
                    self.enter(Phase::Inactive, now_ms);
                    self.ends_at_ms = Some(now_ms);
                    Some(Change::Resolved)
                }
            }
        }
    }

    fn enter(&mut self, phase: Phase, now_ms: i64) {
        self.phase = phase;
        self.since_ms = now_ms;
    }
}

/// What one channel has announced of one rule's alert (Alertmanager's notification log for
/// a group of one alertname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupLog {
    /// The `startsAt` of the firing whose notice was delivered.
    pub announced_starts_at_ms: Option<i64>,
    /// Whether the end of that firing was announced (or, without `send_resolved`, passed).
    pub resolved_announced: bool,
    /// When the last notice was delivered.
    pub last_sent_ms: Option<i64>,
}

/// What a group should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// The first notice of a firing.
    Firing,
    /// The same firing again, `repeat_interval` after the last notice.
    Repeat,
    /// The firing announced has ended.
    Resolved,
    /// The end is not to be sent (silenced, or no `send_resolved`): only recorded.
    SkipResolved,
}

/// Whether `wait` has passed from `from_ms` to `now_ms`.
pub fn at_or_after(now_ms: i64, from_ms: i64, wait: Duration) -> bool {
    now_ms >= from_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
}

impl GroupLog {
    /// What is due at `now_ms` for an alert in `state`, under `timing`; `silenced` alerts
    /// are not announced (a firing is, once the silence ends).
    pub fn due(&self, state: &AlertState, timing: &Timing, now_ms: i64, silenced: bool) -> Due {
        match (state.phase, state.starts_at_ms) {
            (Phase::Firing, Some(starts_at)) => {
                if self.announced_starts_at_ms != Some(starts_at) {
                    if silenced || !at_or_after(now_ms, starts_at, timing.group_wait) {
                        return Due::Nothing;
                    }
                    return Due::Firing;
                }
                let last = self.last_sent_ms.unwrap_or(starts_at);
                if !silenced && at_or_after(now_ms, last, timing.repeat_interval) {
                    return Due::Repeat;
                }
                Due::Nothing
            }
            _ => {
                let announced = self.announced_starts_at_ms;
                if announced.is_none() || self.resolved_announced {
                    return Due::Nothing;
                }
                let last = self.last_sent_ms.unwrap_or(0);
                if !at_or_after(now_ms, last, timing.group_interval) {
                    return Due::Nothing;
                }
                if silenced || !timing.send_resolved {
                    Due::SkipResolved
                } else {
                    Due::Resolved
                }
            }
        }
    }

    /// Records that `due` was delivered at `now_ms` for a firing starting at `starts_at_ms`.
    pub fn delivered(&mut self, due: Due, starts_at_ms: Option<i64>, now_ms: i64) {
        match due {
            Due::Nothing => {}
            Due::Firing | Due::Repeat => {
                self.announced_starts_at_ms = starts_at_ms;
                self.resolved_announced = false;
                self.last_sent_ms = Some(now_ms);
            }
            Due::Resolved => {
                self.resolved_announced = true;
                self.last_sent_ms = Some(now_ms);
            }
            Due::SkipResolved => self.resolved_announced = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000;
    const NO: Duration = Duration::ZERO;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn for_suppresses_a_short_blip() {
        let mut state = AlertState::default();
        assert_eq!(state.step(0, true, 5.0, secs(3), NO), Some(Change::Pending));
        assert_eq!(state.step(S, true, 5.0, secs(3), NO), None);
        assert_eq!(
            state.step(2 * S, false, 0.0, secs(3), NO),
            Some(Change::Cleared)
        );
        assert_eq!(state.phase, Phase::Inactive);
        assert_eq!(
            state.step(3 * S, true, 5.0, secs(3), NO),
            Some(Change::Pending)
        );
        assert_eq!(
            state.step(6 * S, true, 5.0, secs(3), NO),
            Some(Change::Firing)
        );
        assert_eq!(state.starts_at_ms, Some(6 * S));
    }

    #[test]
    fn keep_firing_for_rides_out_flapping() {
        let mut state = AlertState::default();
        let keep = secs(5);
        assert_eq!(state.step(0, true, 1.0, NO, keep), Some(Change::Firing));
        assert_eq!(state.step(S, false, 0.0, NO, keep), None);
        assert_eq!(state.step(2 * S, true, 1.0, NO, keep), None);
        assert_eq!(state.step(4 * S, false, 0.0, NO, keep), None);
        assert_eq!(
            state.step(7 * S, false, 0.0, NO, keep),
            Some(Change::Resolved)
        );
        assert_eq!(
            (state.starts_at_ms, state.ends_at_ms),
            (Some(0), Some(7 * S))
        );
    }

    #[test]
    fn a_group_announces_once_repeats_and_resolves_once() {
        let timing = Timing {
            group_wait: secs(2),
            group_interval: secs(1),
            repeat_interval: secs(10),
            send_resolved: true,
            ..Timing::default()
        };
        let mut state = AlertState::default();
        let mut log = GroupLog::default();
        state.step(0, true, 1.0, NO, NO);
        assert_eq!(
            log.due(&state, &timing, S, false),
            Due::Nothing,
            "group_wait"
        );
        assert_eq!(
            log.due(&state, &timing, 2 * S, true),
            Due::Nothing,
            "silenced"
        );
        let due = log.due(&state, &timing, 2 * S, false);
        assert_eq!(due, Due::Firing);
        log.delivered(due, state.starts_at_ms, 2 * S);
        assert_eq!(log.due(&state, &timing, 5 * S, false), Due::Nothing);
        assert_eq!(log.due(&state, &timing, 12 * S, false), Due::Repeat);
        state.step(13 * S, false, 0.0, NO, NO);
        let due = log.due(&state, &timing, 13 * S, false);
        assert_eq!(due, Due::Resolved);
        log.delivered(due, state.starts_at_ms, 13 * S);
        assert_eq!(log.due(&state, &timing, 60 * S, false), Due::Nothing);
    }

    #[test]
    fn a_firing_ended_before_group_wait_is_never_announced() {
        let timing = Timing::default();
        let mut state = AlertState::default();
        let log = GroupLog::default();
        state.step(0, true, 1.0, NO, NO);
        state.step(S, false, 0.0, NO, NO);
        assert_eq!(log.due(&state, &timing, 100 * S, false), Due::Nothing);
    }
}
