//! [`SledStore`]: the `Store` trait on sled.
//!
//! By concern: `open` opens a data dir (its lock, sled's recovery, the schema check);
//! `objects` writes one document at a time (compare-and-swap, in the order writes land, durable
//! before it returns); `pools` stores pools apart from their allocation records and writes an
//! allocation's records delta. Here are the store itself, its watch, and the trait, which only
//! dispatches.

mod objects;
mod open;
mod pools;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipam_core::Error;
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchEvent, WatchStream};
use ipam_core::{Kind, LabelSelector, ObjectKey};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::commit::{GroupCommit, Stats};
use crate::layout;
use crate::lock::DirLock;

pub use open::OpenOptions;

/// A [`Store`] in a sled database in a data dir, held under the dir's lock file for its life.
/// See the crate documentation for the layout, durability and locking.
///
/// It is one value per process and data dir: share it with an `Arc` (a second `open` of the same
/// dir waits for this one to be dropped).
pub struct SledStore {
    // Fields drop in order: sled closes before the lock file is released.
    trees: Vec<sled::Tree>,
    db: sled::Db,
    commit: GroupCommit,
    /// Held across a write's compare-and-swap, its ticket and its notification, so that
    /// watchers see the writes in the order they landed. It never spans an await or a flush.
    order: Mutex<()>,
    events: broadcast::Sender<WatchEvent>,
    dir: PathBuf,
    _lock: DirLock,
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

    fn tree(&self, kind: Kind) -> &sled::Tree {
        let i = Kind::ALL
            .iter()
            .position(|&k| k == kind)
            .expect("Kind::ALL lists every kind");
        &self.trees[i]
    }

    fn next_version(&self) -> Result<String, Error> {
        // `generate_id` is monotonic across restarts (it skips ahead after a crash); +1 so that
        // no version is "0", which Kubernetes clients read as "any version".
        self.db
            .generate_id()
            .map(|id| (id + 1).to_string())
            .map_err(|e| Error::backend("generate a resourceVersion", e))
    }

    fn order(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data: a panic elsewhere leaves nothing half-done.
        self.order.lock().unwrap_or_else(|p| p.into_inner())
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
            .map_err(|e| Error::backend("sync the store", e))
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
