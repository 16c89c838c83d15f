//! What to do when a write conflicts: the one policy of the engine (backoff, `max_retries`,
//! [`Error::RetriesExhausted`]), used by `modify`, the pool batcher and the steps that re-run
//! whole.

use std::time::Duration;

use rand::Rng;

use super::Engine;
use crate::error::Error;
use crate::meta::ObjectKey;
use crate::store::Store;

impl<S: Store> Engine<S> {
    /// Counts a conflicting attempt at `key`: waits the backoff and returns `Ok` while another
    /// attempt is allowed, [`Error::RetriesExhausted`] once `max_retries` attempts conflicted.
    pub(crate) async fn conflicted(&self, key: &ObjectKey, attempt: &mut u32) -> Result<(), Error> {
        *attempt += 1;
        self.stats.conflicted();
        if *attempt >= self.config.max_retries {
            tracing::warn!(%key, attempts = *attempt, "giving up after conflicts");
            return Err(Error::RetriesExhausted {
                key: key.clone(),
                attempts: *attempt,
            });
        }
        self.backoff(*attempt).await;
        Ok(())
    }

    async fn backoff(&self, attempt: u32) {
        let base = Duration::from_micros(500) * 2u32.saturating_pow(attempt.min(7));
        let base = base.min(Duration::from_millis(50));
        // Jitter, so that writers that conflicted once do not meet again.
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::time::sleep(base.mul_f64(jitter)).await;
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
            match f().await {
                Err(Error::Conflict(_) | Error::AlreadyExists(_)) => {
                    self.conflicted(key, &mut attempt).await?;
                }
                other => return other,
            }
        }
    }
}
