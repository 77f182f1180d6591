//! Saying so while the consumer has not joined its group yet.
//!
//! Subscribing returns at once; the partitions come later, from the group coordinator. Until
//! the first assignment arrives the loop has nothing to read, which from outside looks like a
//! stuck process. After [`QUIET_FOR`] without one, the wait is logged (again every
//! [`crate::startup::REPEAT_EVERY`]) and shown on the status endpoint.

use std::time::{Duration, Instant};

/// How long a join may take before it is worth a log line (a rebalance usually takes seconds).
pub const QUIET_FOR: Duration = Duration::from_secs(10);

/// Whether the group was joined, and what was said about it.
#[derive(Debug)]
pub struct Joining {
    since: Instant,
    joined: bool,
    last_said: Option<Instant>,
}

/// What to do after a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Say {
    /// Nothing new.
    Nothing,
    /// Still waiting: log it and show it.
    Waiting(Duration),
    /// Joined after having said it was waiting: clear what the status shows.
    Joined,
}

impl Joining {
    /// Starts counting from the subscription.
    pub fn new(now: Instant) -> Self {
        Self {
            since: now,
            joined: false,
            last_said: None,
        }
    }

    /// Checks at `now`, given whether any partition is assigned.
    pub fn check(&mut self, assigned: bool, now: Instant) -> Say {
        if self.joined {
            return Say::Nothing;
        }
        if assigned {
            self.joined = true;
            return if self.last_said.is_some() {
                Say::Joined
            } else {
                Say::Nothing
            };
        }
        let waited = now.duration_since(self.since);
        let due = self
            .last_said
            .is_none_or(|t| now.duration_since(t) >= crate::startup::REPEAT_EVERY);
        if waited >= QUIET_FOR && due {
            self.last_said = Some(now);
            Say::Waiting(waited)
        } else {
            Say::Nothing
        }
    }
}

impl super::Pipeline {
    /// Logs and shows that the consumer waits to join its group, while it does.
    pub(super) fn say_if_not_joined(&mut self) {
        let assigned = self.source.has_assignment();
        match self.joining.check(assigned, std::time::Instant::now()) {
            Say::Nothing => {}
            Say::Waiting(waited) => {
                let what = format!(
                    "to join consumer group `{}`: no partition of `{}` is assigned yet",
                    self.settings.group, self.settings.topic
                );
                tracing::warn!(waited_secs = waited.as_secs(), "waiting {what}");
                self.board.waiting_for(Some(what));
            }
            Say::Joined => {
                tracing::info!(group = %self.settings.group, "joined the consumer group");
                self.board.waiting_for(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_at_first_then_says_it_waits_at_a_steady_interval_then_that_it_joined() {
        let t0 = Instant::now();
        let mut joining = Joining::new(t0);
        assert_eq!(
            joining.check(false, t0 + Duration::from_secs(5)),
            Say::Nothing
        );
        assert_eq!(
            joining.check(false, t0 + Duration::from_secs(10)),
            Say::Waiting(Duration::from_secs(10))
        );
        assert_eq!(
            joining.check(false, t0 + Duration::from_secs(20)),
            Say::Nothing
        );
        assert_eq!(
            joining.check(false, t0 + Duration::from_secs(40)),
            Say::Waiting(Duration::from_secs(40))
        );
        assert_eq!(
            joining.check(true, t0 + Duration::from_secs(41)),
            Say::Joined
        );
        assert_eq!(
            joining.check(false, t0 + Duration::from_secs(90)),
            Say::Nothing,
            "an empty assignment later is a rebalance, not a join"
        );
    }

    #[test]
    fn a_prompt_join_says_nothing() {
        let t0 = Instant::now();
        let mut joining = Joining::new(t0);
        assert_eq!(
            joining.check(true, t0 + Duration::from_secs(1)),
            Say::Nothing
        );
    }
}
