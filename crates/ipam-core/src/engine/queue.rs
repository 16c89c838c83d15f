//! Per-object queues: the seam where concurrent writes of one object become one write.
//!
//! A write of a contended object is the expensive step (an fsync on sled, an API round trip
//! with conflict risk on Kubernetes), so callers changing one object queue their changes on it
//! instead of each reading and writing in turn. The first caller to find the queue empty
//! *leads*: it takes everything queued, applies it to one fresh read, writes once and answers
//! each caller, and goes on until the queue is empty. The others wait for their answer.
//!
//! Both the pool batcher (`batch`) and [`Engine::modify`](super::Engine::modify) queue here;
//! what they queue (an intent that can be re-applied to newer data) and how a batch is written
//! is theirs.
//!
//! The leader writes in its own task, so its writes are deferred (`deferring_durability`) when
//! its caller's are. A caller outside such a scope was promised a durable write when it hears
//! back: a leader inside one syncs the store before answering it ([`owes_sync`]).
//!
//! A leader can be cancelled (its caller went away) while others wait on it. Its [`Leader`]
//! then drops the whole queue: every waiter sees its answer channel close, and queues again —
//! one of them leads next. That is why a queued item must be something its caller can submit
//! again: the answer was never sent, but the write may have landed, so re-applying it to a
//! fresh read must find it done.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use crate::error::Error;
use crate::meta::ObjectKey;

/// Queues of `W` (a change and the channel its answer goes back on), one per key.
pub(crate) struct Queues<K, W> {
    waiting: Mutex<HashMap<K, Vec<W>>>,
}

impl<K, W> Default for Queues<K, W> {
    fn default() -> Self {
        Queues {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, W> Queues<K, W> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<W>>> {
        // Nothing is left half-done under this lock: a panic elsewhere does not poison it.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` on `key`. When no queue was there, the caller leads it: it must serve the
    /// batches of the returned [`Leader`] until there are none (its own item comes first).
    pub(crate) fn join<Q>(&self, key: &Q, item: W) -> Option<Leader<'_, K, W>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.join_many(key, vec![item])
    }

    /// Queues `items` on `key` together, so that one batch takes them all (see
    /// [`Queues::join`]).
    pub(crate) fn join_many<Q>(&self, key: &Q, mut items: Vec<W>) -> Option<Leader<'_, K, W>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut waiting = self.lock();
        if let Some(queue) = waiting.get_mut(key) {
            queue.append(&mut items);
            return None;
        }
        waiting.insert(key.to_owned(), items);
        Some(Leader {
            queues: self,
            key: key.to_owned(),
            done: false,
        })
    }
}

/// The right, and the duty, to serve one key's queue.
pub(crate) struct Leader<'q, K: Hash + Eq, W> {
    queues: &'q Queues<K, W>,
    key: K,
    done: bool,
}

impl<K: Hash + Eq, W> Leader<'_, K, W> {
    /// Everything queued, in the order it came; `None` once the queue is empty, which is then
    /// removed so that the next caller leads.
    pub(crate) fn next_batch(&mut self) -> Option<Vec<W>> {
        let mut waiting = self.queues.lock();
        let queue = waiting.get_mut(&self.key).expect("a led queue exists");
        if queue.is_empty() {
            waiting.remove(&self.key);
            self.done = true;
            return None;
        }
        Some(std::mem::take(queue))
    }

    /// Puts `items` taken with [`Leader::next_batch`] but not served back at the head of the
    /// queue, ahead of what came meanwhile, for the next batch.
    pub(crate) fn put_back(&mut self, items: Vec<W>) {
        if items.is_empty() {
            return;
        }
        let mut waiting = self.queues.lock();
        let queue = waiting.get_mut(&self.key).expect("a led queue exists");
        queue.splice(0..0, items);
    }
}

impl<K: Hash + Eq, W> Drop for Leader<'_, K, W> {
    fn drop(&mut self) {
        if !self.done {
            // Cancelled: the waiters see their channels close and queue again.
            self.queues.lock().remove(&self.key);
        }
    }
}

/// The failure of a write shared by several callers, for each caller but the first (errors are
/// not `Clone`: a backend's source is a trait object). An unavailable store stays
/// recognisable as such, so that every caller hears "try again later".
pub(crate) fn shared_failure(key: &ObjectKey, error: &Error) -> Error {
    match error {
        Error::RetriesExhausted { key, attempts } => Error::RetriesExhausted {
            key: key.clone(),
            attempts: *attempts,
        },
        other if other.is_unavailable() => {
            Error::unavailable(format!("writing {key}"), other.to_string())
        }
        other => Error::backend(format!("writing {key}"), other.to_string()),
    }
}

/// Whether a leader must sync the store before it answers: it runs inside
/// [`deferring_durability`](crate::store::deferring_durability), so its writes return before
/// they are durable, and some caller it wrote for (`callers_defer`: whether each caller's task
/// does too) does not, and must not hear back before its write is durable.
pub(crate) fn owes_sync(callers_defer: impl IntoIterator<Item = bool>) -> bool {
    crate::store::durability_deferred() && callers_defer.into_iter().any(|defers| !defers)
}

/// One async lock per key, made when first asked for and dropped when nobody holds or waits
/// for it: callers on different keys run side by side, callers on one key take turns.
pub(crate) struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key`; it is held until the guard drops.
    pub(crate) async fn lock(&self, key: &K) -> KeyedGuard<'_, K> {
        let lock = self.map().entry(key.clone()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        KeyedGuard {
            locks: self,
            key: key.clone(),
            lock,
            guard: Some(guard),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, std::sync::Arc<tokio::sync::Mutex<()>>>> {
        // Nothing is left half-done under this lock: a panic elsewhere does not poison it.
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lock of one key of [`KeyedLocks`], held while it lives.
pub(crate) struct KeyedGuard<'l, K: Hash + Eq + Clone> {
    locks: &'l KeyedLocks<K>,
    key: K,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map();
        // Others clone the lock under the map's lock: two references (the map's and this
        // guard's) mean nobody else holds or waits for it.
        if std::sync::Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn keyed_locks_serialise_one_key_and_not_two_and_forget_idle_keys() {
        let locks = KeyedLocks::<&str>::default();
        let a = locks.lock(&"a").await;
        // Another key is free while "a" is held.
        let b = locks.lock(&"b").await;
        drop(b);
        // The same key waits.
        let second = locks.lock(&"a");
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
        drop(a);
        let again = second.await;
        assert_eq!(locks.map().len(), 1, "\"a\" is held, \"b\" was forgotten");
        drop(again);
        assert!(locks.map().is_empty());
    }
}
