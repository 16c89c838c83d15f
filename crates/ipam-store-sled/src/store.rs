//! [`SledStore`]: the `Store` trait on sled.

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use ipam_core::Error;
use ipam_core::store::semantics::{self, Outcome};
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchEvent, WatchStream};
use ipam_core::{Kind, LabelSelector, ObjectKey};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::commit::{FlushPolicy, GroupCommit, Stats, Ticket};
use crate::disk::Disk;
use crate::error::OpenError;
use crate::layout::{self, DB_DIR};
use crate::lock::{self, DirLock};
use crate::records;

/// How many times a write re-reads an object whose stored bytes changed between its read and
/// its compare-and-swap before giving up with `RetriesExhausted`. Each failure means another
/// write of this process landed, so this is never reached in practice.
const MAX_ATTEMPTS: u32 = 1000;

/// How [`SledStore::open`] opens a data dir. Build it like `std::fs::OpenOptions`.
///
/// ```
/// use std::time::Duration;
/// use ipam_store_sled::OpenOptions;
///
/// let options = OpenOptions::new().lock_timeout(Duration::from_secs(5));
/// assert_eq!(options.get_lock_timeout(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct OpenOptions {
    lock_timeout: Duration,
    flush_policy: FlushPolicy,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_timeout: OpenOptions::DEFAULT_LOCK_TIMEOUT,
            flush_policy: FlushPolicy::Group,
        }
    }
}

impl OpenOptions {
    /// The default lock timeout: 30 s, well under the time a container runtime gives one CNI
    /// call, well over the time one call holds the store.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

    /// The defaults: wait up to [`Self::DEFAULT_LOCK_TIMEOUT`] for the lock, group commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long `open` waits for another holder of the data dir's lock before it fails with
    /// [`OpenError::Locked`]. Zero tries once.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How writes are flushed (group commit by default).
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.flush_policy = policy;
        self
    }

    /// The lock timeout set.
    pub fn get_lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The flush policy set.
    pub fn get_flush_policy(&self) -> FlushPolicy {
        self.flush_policy
    }
}

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
    /// Opens the store in `dir`, creating the dir (mode 0700, parents too) and an empty store if
    /// missing. Waits up to the options' lock timeout for another process (or another store of
    /// this process) to release the dir.
    ///
    /// This blocks the calling thread (on the lock and on sled's recovery); from async code, call
    /// it through `tokio::task::spawn_blocking` if that matters.
    pub fn open(dir: impl AsRef<Path>, options: OpenOptions) -> Result<SledStore, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        create_data_dir(&dir).map_err(|source| OpenError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        let lock = lock::acquire(&dir, options.lock_timeout)?;
        let db_dir = dir.join(DB_DIR);
        let db = layout::open_db(&db_dir)?;
        layout::check_schema(&db, &dir)?;
        let trees = Kind::ALL
            .iter()
            .map(|&kind| db.open_tree(layout::tree_name(kind)))
            .collect::<sled::Result<Vec<_>>>()
            .map_err(|source| OpenError::Sled {
                path: db_dir.clone(),
                source,
            })?;
        let disk = Disk::open(db.clone(), &dir, &db_dir).map_err(|source| OpenError::Sync {
            path: db_dir,
            source,
        })?;
        Ok(SledStore {
            trees,
            db,
            commit: GroupCommit::new(disk, options.flush_policy),
            order: Mutex::new(()),
            events: broadcast::channel(1024).0,
            dir,
            _lock: lock,
        })
    }

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

    /// Compare-and-swap of `key` from `old` to `new` (absent when `None`); on success, takes a
    /// ticket and tells watchers, in the order the writes landed. `Ok(None)` when the stored
    /// value was not `old`.
    fn swap(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
        old: Option<&[u8]>,
        new: Option<(sled::IVec, &str)>,
    ) -> Result<Option<Ticket>, Error> {
        let version = new.as_ref().map(|(_, v)| v.to_string());
        let _order = self.order();
        let swapped = self
            .tree(key.kind)
            .compare_and_swap(sled_key, old, new.map(|(bytes, _)| bytes))
            .map_err(|e| Error::backend(format!("write {key}"), e))?;
        if swapped.is_err() {
            return Ok(None);
        }
        let ticket = self.commit.committed();
        // No receiver is not an error: nobody watches.
        let _ = self.events.send(WatchEvent::Changed {
            key: key.clone(),
            version,
        });
        Ok(Some(ticket))
    }

    async fn durable(&self, key: &ObjectKey, ticket: Ticket) -> Result<(), Error> {
        // Inside `deferring_durability` the caller syncs once at the end (see `Store::sync`).
        if ipam_core::store::durability_deferred() {
            return Ok(());
        }
        self.commit
            .durable(ticket)
            .await
            .map_err(|e| Error::backend(format!("flush after writing {key}"), e))
    }

    /// Reads `key`, lets `step` compute the write from the stored document and a fresh version,
    /// and swaps it in; re-reads and recomputes when another write landed in between. Returns
    /// the document `step` saw and what it decided, once durable.
    async fn rewrite(
        &self,
        key: &ObjectKey,
        mut step: impl FnMut(&Value, &str) -> Result<Outcome, Error> + Send,
    ) -> Result<(Arc<Value>, Outcome), Error> {
        let sled_key = layout::encode_key(key).ok_or_else(|| Error::NotFound(key.clone()))?;
        if key.kind == Kind::SpiderIPPool {
            let (stored, outcome, ticket) = self.rewrite_pool(key, &sled_key, &mut step)?;
            self.durable(key, ticket).await?;
            return Ok((stored, outcome));
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some(old) = self.read(key, &sled_key)? else {
                return Err(Error::NotFound(key.clone()));
            };
            let stored = Arc::new(parse(key, &old)?);
            // Taken after the read: a write that lands has a version above every earlier
            // write of the same object.
            let version = self.next_version()?;
            let outcome = step(&stored, &version)?;
            let new = match &outcome {
                Outcome::Put(v) => Some((sled::IVec::from(serialize(key, v)?), version.as_str())),
                Outcome::Remove => None,
            };
            if let Some(ticket) = self.swap(key, &sled_key, Some(&old), new)? {
                self.durable(key, ticket).await?;
                return Ok((stored, outcome));
            }
        }
        Err(Error::RetriesExhausted {
            key: key.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// A pool with its records put back, read under the write lock so that the document and the
    /// records are of one moment.
    fn read_pool(&self, key: &ObjectKey, sled_key: &[u8]) -> Result<Option<Value>, Error> {
        let _order = self.order();
        self.read_pool_locked(key, sled_key)
    }

    fn read_pool_locked(&self, key: &ObjectKey, sled_key: &[u8]) -> Result<Option<Value>, Error> {
        let Some(bytes) = self.read(key, sled_key)? else {
            return Ok(None);
        };
        let mut doc = parse(key, &bytes)?;
        records::load(self.tree(Kind::SpiderIPPool), key, sled_key, &mut doc)?;
        Ok(Some(doc))
    }

    /// Every pool matching `selector`, with its records, read under the write lock (see
    /// `read_pool`). A pool's records follow its document in the tree (`name`, then
    /// `name 0x00 ip`, …), so after each document the scan resumes at `name 0x01`: each record
    /// is read once, when it is put back into its pool, and a pool left out by the selector
    /// costs no record read at all.
    fn list_pools(&self, selector: Option<&LabelSelector>) -> Result<Vec<Value>, Error> {
        let tree = self.tree(Kind::SpiderIPPool);
        let _order = self.order();
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some(entry) = tree.range(from.as_slice()..).next() {
            let (k, bytes) = entry.map_err(|e| Error::backend("list spiderippools", e))?;
            from = k.to_vec();
            if records::is_record(&k) {
                // A record without its document (never written so): step over it.
                from.push(0);
                continue;
            }
            from.push(1);
            let key = layout::decode_key(Kind::SpiderIPPool, &k);
            let mut value = parse(&key, &bytes)?;
            if semantics::matches(&value, selector) {
                records::load(tree, &key, &k, &mut value)?;
                out.push(value);
            }
        }
        Ok(out)
    }

    /// Applies a batch to the pool tree and notifies, under the write lock the caller holds.
    fn commit_pool(
        &self,
        key: &ObjectKey,
        batch: sled::Batch,
        version: Option<String>,
    ) -> Result<Ticket, Error> {
        self.tree(Kind::SpiderIPPool)
            .apply_batch(batch)
            .map_err(|e| Error::backend(format!("write {key}"), e))?;
        let ticket = self.commit.committed();
        let _ = self.events.send(WatchEvent::Changed {
            key: key.clone(),
            version,
        });
        Ok(ticket)
    }

    /// `rewrite` of a pool: the whole document with its records, written back as the document
    /// and the records that changed.
    fn rewrite_pool(
        &self,
        key: &ObjectKey,
        sled_key: &[u8],
        step: &mut (impl FnMut(&Value, &str) -> Result<Outcome, Error> + Send),
    ) -> Result<(Arc<Value>, Outcome, Ticket), Error> {
        let _order = self.order();
        let Some(stored) = self.read_pool_locked(key, sled_key)? else {
            return Err(Error::NotFound(key.clone()));
        };
        let version = self.next_version()?;
        let outcome = step(&stored, &version)?;
        let mut stored_doc = stored.clone();
        let old = records::split(key, &mut stored_doc)?;
        let (batch, event_version) = match &outcome {
            Outcome::Put(v) => (put_pool(key, sled_key, &old, v)?, Some(version)),
            Outcome::Remove => {
                let mut batch = sled::Batch::default();
                batch.remove(sled_key);
                for ip in old.keys() {
                    batch.remove(records::key(sled_key, ip));
                }
                (batch, None)
            }
        };
        let ticket = self.commit_pool(key, batch, event_version)?;
        Ok((Arc::new(stored), outcome, ticket))
    }

    fn read(&self, key: &ObjectKey, sled_key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        self.tree(key.kind)
            .get(sled_key)
            .map_err(|e| Error::backend(format!("read {key}"), e))
    }

    async fn write(&self, kind: Kind, object: Value, status_only: bool) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let (stored, outcome) = self
            .rewrite(&key, |stored, version| {
                semantics::update(kind, stored, object.clone(), status_only, version)
            })
            .await?;
        Ok(match outcome {
            Outcome::Put(v) => v,
            // As the in-memory store: the object as it was before its last finalizer went.
            Outcome::Remove => (*stored).clone(),
        })
    }
}

/// Creates `dir` and its missing parents with mode 0700, and syncs the directories that got a
/// new entry, so that a store created just before a power loss is still found. An existing dir
/// is left as it is.
fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    // The ancestors of a relative path end with "", the working directory.
    let ancestors = || {
        dir.ancestors().map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
    };
    let existing = ancestors().find(|a| a.is_dir());
    if existing == Some(dir) {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for parent in ancestors().skip(1) {
        std::fs::File::open(parent)?.sync_all()?;
        if Some(parent) == existing {
            break;
        }
    }
    Ok(())
}

/// The batch writing the pool document `pool` over one whose records were `old`: the document
/// without its records, the records that changed, the removal of those that went.
fn put_pool(
    key: &ObjectKey,
    sled_key: &[u8],
    old: &BTreeMap<IpAddr, Value>,
    pool: &Value,
) -> Result<sled::Batch, Error> {
    let mut doc = pool.clone();
    let new = records::split(key, &mut doc)?;
    let mut batch = sled::Batch::default();
    batch.insert(sled_key, serialize(key, &doc)?);
    for ip in old.keys().filter(|ip| !new.contains_key(ip)) {
        batch.remove(records::key(sled_key, ip));
    }
    for (ip, rec) in &new {
        if old.get(ip) != Some(rec) {
            batch.insert(records::key(sled_key, ip), serialize(key, rec)?);
        }
    }
    Ok(batch)
}

fn parse(key: &ObjectKey, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason: format!("stored document is not JSON: {e}"),
    })
}

fn serialize(key: &ObjectKey, value: &Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason: e.to_string(),
    })
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
        self.read(key, &sled_key)?
            .map(|bytes| parse(key, &bytes))
            .transpose()
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
        let tree = self.tree(kind);
        let entries = match namespace {
            Some(ns) if kind.is_namespaced() => match layout::namespace_prefix(ns) {
                Some(prefix) => tree.scan_prefix(prefix),
                None => return Ok(Vec::new()),
            },
            // A namespace means nothing to a cluster-scoped kind (Kubernetes ignores it).
            _ => tree.iter(),
        };
        let mut out = Vec::new();
        for entry in entries {
            let (k, bytes) =
                entry.map_err(|e| Error::backend(format!("list {}", kind.plural()), e))?;
            let key = layout::decode_key(kind, &k);
            let value = parse(&key, &bytes)?;
            if semantics::matches(&value, selector) {
                out.push(value);
            }
        }
        Ok(out)
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let key = semantics::key_of(kind, &object)?;
        let sled_key = layout::encode_key(&key).ok_or_else(|| Error::Malformed {
            kind,
            name: key.name.clone(),
            reason: "metadata.namespace contains a NUL character".into(),
        })?;
        let version = self.next_version()?;
        let stored = semantics::create(kind, object, &version, &semantics::now_rfc3339())?;
        if kind == Kind::SpiderIPPool {
            let ticket = {
                let _order = self.order();
                if self.read(&key, &sled_key)?.is_some() {
                    return Err(Error::AlreadyExists(key));
                }
                let batch = put_pool(&key, &sled_key, &BTreeMap::new(), &stored)?;
                self.commit_pool(&key, batch, Some(version))?
            };
            self.durable(&key, ticket).await?;
            return Ok(stored);
        }
        let bytes = sled::IVec::from(serialize(&key, &stored)?);
        let Some(ticket) = self.swap(&key, &sled_key, None, Some((bytes, &version)))? else {
            return Err(Error::AlreadyExists(key));
        };
        self.durable(&key, ticket).await?;
        Ok(stored)
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, false).await
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(kind, object, true).await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        let now = semantics::now_rfc3339();
        let (_, outcome) = self
            .rewrite(key, |stored, version| {
                semantics::delete(key, stored, precondition, version, &now)
            })
            .await?;
        Ok(match outcome {
            Outcome::Put(v) => Deleted::Terminating(v),
            Outcome::Remove => Deleted::Gone,
        })
    }

    /// Writes the document and the changed records only, in one atomic batch: an allocation
    /// costs the same whatever the pool holds.
    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        let sled_key = layout::encode_key(&key).ok_or_else(|| Error::NotFound(key.clone()))?;
        let (ticket, new) = {
            let _order = self.order();
            let Some(bytes) = self.read(&key, &sled_key)? else {
                return Err(Error::NotFound(key));
            };
            let mut doc = parse(&key, &bytes)?;
            if semantics::version_of(&doc) != Some(version) {
                return Err(Error::Conflict(key));
            }
            let new = self.next_version()?;
            doc["metadata"]["resourceVersion"] = Value::from(new.as_str());
            if !doc.get("status").is_some_and(Value::is_object) {
                doc["status"] = Value::Object(Default::default());
            }
            let status = &mut doc["status"];
            status["allocatedIPCount"] = Value::from(delta.allocated_ip_count);
            status["totalIPCount"] = Value::from(delta.total_ip_count);
            match delta.last_allocated_ip {
                Some(ip) => status["lastAllocatedIP"] = Value::from(ip.to_string()),
                None => {
                    if let Some(o) = status.as_object_mut() {
                        o.remove("lastAllocatedIP");
                    }
                }
            }
            let mut batch = sled::Batch::default();
            batch.insert(sled_key.as_slice(), serialize(&key, &doc)?);
            for ip in &delta.remove {
                batch.remove(records::key(&sled_key, ip));
            }
            for (ip, rec) in &delta.set {
                let rec = serde_json::to_value(rec)
                    .map_err(|e| Error::backend(format!("write {key}"), e))?;
                batch.insert(records::key(&sled_key, ip), serialize(&key, &rec)?);
            }
            (self.commit_pool(&key, batch, Some(new.clone()))?, new)
        };
        self.durable(&key, ticket).await?;
        Ok(new)
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
