//! What to do when a write conflicts: the one policy of the engine (backoff, `max_retries`,
//! [`Error::RetriesExhausted`]), used by `modify`, the pool batcher and the steps that re-run
//! whole.
//!
//! The backoff is measured in the time the conflicting attempt took (its read and its write):
//! writers that meet on one object (ten agents taking IPs of one Deployment's pool, or of one
//! shared pool) retry spread over a window of a few such attempts, doubling while they keep
//! meeting, so that they take turns instead of colliding round after round. A fixed backoff of
//! a millisecond, shorter than one write to the API server, made every loser of a round meet
//! again in the next: n writers cost about n²/2 writes. On an embedded store an attempt takes
//! microseconds, and so does the wait.

use std::time::{Duration, Instant};

use rand::Rng;

use super::Engine;
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// Counts a conflicting attempt at `key`, begun at `began`: waits the backoff and returns
    /// `Ok` while another attempt is allowed, [`Error::RetriesExhausted`] once `max_retries`
    /// attempts conflicted.
    pub(crate) async fn conflicted(
        &self,
        key: &ObjectKey,
        attempt: &mut u32,
        began: Instant,
    ) -> Result<(), Error> {
        *attempt += 1;
        self.stats.conflicted();
        if *attempt >= self.config.max_retries {
            tracing::warn!(%key, attempts = *attempt, "giving up after conflicts");
            return Err(Error::RetriesExhausted {
                key: key.clone(),
                attempts: *attempt,
            });
        }
        tokio::time::sleep(backoff(*attempt, began.elapsed())).await;
        Ok(())
    }

    /// Runs the step `f` until it neither conflicts nor finds its object created meanwhile, at
    /// most `max_retries` times. For steps that read other objects to decide, or write several
    /// (see `modify`); a change of one object is [`Engine::modify`].
    pub(crate) async fn retry<T, F, Fut>(&self, key: &ObjectKey, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            let began = Instant::now();
            match f().await {
                Err(Error::Conflict(_) | Error::AlreadyExists(_)) => {
                    self.conflicted(key, &mut attempt, began).await?;
                }
                other => return other,
            }
        }
    }
}

/// The wait before attempt `attempt + 1`, after a conflicting attempt that took `took`: a
/// random point ("full jitter") in a window of `took` (at least [`MIN_STEP`]) doubled per
/// conflict, at most [`MAX_WINDOW`].
fn backoff(attempt: u32, took: Duration) -> Duration {
    let window = took.max(MIN_STEP) * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    window
        .min(MAX_WINDOW)
        .mul_f64(rand::rng().random_range(0.0..1.0))
}

/// The smallest step of the backoff window.
const MIN_STEP: Duration = Duration::from_micros(500);

/// The largest backoff window: with `max_retries` of 24 a write gives up after about five
/// seconds of waits at worst.
const MAX_WINDOW: Duration = Duration::from_millis(400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_the_attempt_and_its_cost_and_is_bounded() {
        let took = Duration::from_millis(20);
        for _ in 0..200 {
            assert!(backoff(1, took) < took);
            assert!(backoff(3, took) < took * 4);
            assert!(backoff(20, took) < MAX_WINDOW);
            assert!(backoff(1, Duration::ZERO) < MIN_STEP);
        }
        // Full jitter: the waits of the losers of one round spread over the whole window.
        let waits: Vec<Duration> = (0..400).map(|_| backoff(4, took)).collect();
        let (low, high) = (took * 2, took * 6);
        assert!(waits.iter().any(|w| *w < low), "some retry early");
        assert!(waits.iter().any(|w| *w > high), "some retry late");
    }
}
