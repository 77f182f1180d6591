//! A timer the loop keeps across iterations.
//!
//! The loop waits on several deadlines (the open batch's linger, the idle commit, the end of a
//! hold) in every `select!`. Building a fresh `sleep_until` for each of them on every iteration
//! registered a new timer per message while a batch lingered; an [`Alarm`] keeps one timer and
//! moves it only when its deadline changes.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// One timer, armed for a deadline or disarmed.
pub struct Alarm {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Default for Alarm {
    fn default() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }
}

impl Alarm {
    /// Arms the alarm for `deadline`, or disarms it with `None`; the timer moves only if the
    /// deadline changed.
    pub fn set(&mut self, deadline: Option<Instant>) {
        if deadline != self.armed {
            if let Some(at) = deadline {
                self.sleep.as_mut().reset(at);
            }
            self.armed = deadline;
        }
    }

    /// Resolves once the armed deadline has passed (at once if it already has, for as long as
    /// it stays armed); never while disarmed.
    pub async fn ring(&mut self) {
        match self.armed {
            Some(_) => self.sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn it_rings_at_its_deadline_and_not_while_disarmed() {
        let mut alarm = Alarm::default();
        let quiet = tokio::time::timeout(Duration::from_secs(60), alarm.ring()).await;
        assert!(quiet.is_err(), "a disarmed alarm never rings");
        let start = Instant::now();
        alarm.set(Some(start + Duration::from_millis(50)));
        alarm.ring().await;
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        alarm.ring().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "it stays rung while armed"
        );
        alarm.set(Some(start + Duration::from_millis(200)));
        alarm.ring().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "a new deadline moves it"
        );
    }
}
