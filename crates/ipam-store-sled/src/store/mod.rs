//! [`SledStore`]: the `Store` trait on sled.
//!
//! By concern: `open` opens a data dir (its lock, sled's recovery, the journal's replay, the
//! schema check); `checkpoint` holds what writes share with checkpoints (the write lock, the
//! journal, the overlay, sled's trees) and moves the journal into sled; `objects` writes one
//! document at a time (compare-and-swap, in the order writes land, durable before it returns);
//! `pools` stores pools apart from their allocation records and writes an allocation's records
//! delta. Here are the store itself, its watch, and the trait, which only dispatches.

mod checkpoint;
mod objects;
mod open;
mod pools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipam_core::Error;
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchEvent, WatchStream};
use ipam_core::{Kind, LabelSelector, ObjectKey};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::commit::{GroupCommit, Stats, Ticket};
use crate::journal::Change;
use crate::layout;
use crate::lock::DirLock;
use checkpoint::Shared;

pub use open::OpenOptions;

/// A [`Store`] in a sled database in a data dir, held under the dir's lock file for its life.
/// See the crate documentation for the layout, durability and locking.
///
/// It is one value per process and data dir: share it with an `Arc` (a second `open` of the same
/// dir waits for this one to be dropped).
pub struct SledStore {
    // Fields drop in order: sled closes before the lock file is released (`Drop` joins the
    // checkpoint thread first, the only other holder of `shared`).
    shared: Arc<Shared>,
    db: sled::Db,
    commit: GroupCommit,
    /// The sequence number of the last write landed (journal records carry it).
    seq: AtomicU64,
    /// A checkpoint starts once the journal holds this many bytes.
    journal_limit: u64,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    events: broadcast::Sender<WatchEvent>,
    dir: PathBuf,
    _lock: DirLock,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let running = self
            .checkpointer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = running {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and flushes since the store was opened.
    pub fn stats(&self) -> Stats {
        self.commit.stats()
    }

    /// Moves everything the journal holds into sled and removes the journal files, now, on this
    /// thread (the store does it by itself, in the background, as the journal grows). Blocks on
    /// the disk.
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.shared
            .checkpoint()
            .map_err(|e| Error::backend(format!("checkpoint {}", self.dir.display()), e))
    }

    /// Lands a write under the write lock the caller holds (`order`): its record into the
    /// journal's buffer, its changes into the overlay; then its ticket, and the watchers hear
    /// of it.
    fn land(&self, changes: &[Change], event: WatchEvent) -> Ticket {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.land(seq, changes);
        let ticket = self.commit.committed();
        // No receiver is not an error: nobody watches.
        let _ = self.events.send(event);
        ticket
    }

    fn next_version(&self) -> Result<String, Error> {
        // `generate_id` is monotonic across restarts (it skips ahead after a crash); +1 so that
        // no version is "0", which Kubernetes clients read as "any version".
        self.db
            .generate_id()
            .map(|id| (id + 1).to_string())
            .map_err(|e| Error::backend("generate a resourceVersion", e))
    }

    /// Starts a checkpoint in the background once the journal has grown past the limit.
    fn checkpoint_when_due(&self) {
        if self.shared.journal.size() >= self.journal_limit {
            self.shared.checkpoint_in_background(&self.checkpointer);
        }
    }

    fn order(&self) -> MutexGuard<'_, ()> {
        self.shared.order()
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        let Some(sled_key) = layout::encode_key(key) else {
            return Ok(None);
        };
        if key.kind == Kind::SpiderIPPool {
            return self.read_pool(key, &sled_key);
        }
        self.get_object(key, &sled_key)
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        if kind == Kind::SpiderIPPool {
            return self.list_pools(selector);
        }
        self.list_objects(kind, namespace, selector)
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.create_object(kind, object).await
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, false).await
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, true).await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        self.delete_object(key, precondition).await
    }

    /// Writes the document and the changed records only, in one atomic batch: an allocation
    /// costs the same whatever the pool holds.
    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        self.update_records(name, version, delta).await
    }

    /// One sync covering every write committed so far.
    async fn sync(&self) -> Result<(), Error> {
        let ticket = self.commit.last();
        self.commit
            .durable(ticket)
            .await
            .map_err(|e| Error::backend("sync the store", e))?;
        self.checkpoint_when_due();
        Ok(())
    }

    /// Notifications of the writes made through this store. The store is single-process by
    /// design (the lock file), so these are all the writes there are while it is open.
    fn watch(&self, kind: Kind) -> WatchStream {
        ipam_core::store::broadcast_watch(self.events.subscribe(), kind)
    }

    /// The data dir has one writer, this store: its watch sees every write.
    fn watches_every_write(&self) -> bool {
        true
    }
}
