//! The `Store` trait: a versioned object store with optimistic concurrency.
//!
//! This is the contract the sled database and the Kubernetes API server can both honour
//! (DESIGN §3):
//!
//! - objects are JSON documents with Kubernetes `metadata`, addressed by [`ObjectKey`];
//! - every write sets a new opaque `metadata.resourceVersion`; `update` and `update_status` fail
//!   with [`Error::Conflict`] when the caller's version is stale, `create` fails with
//!   [`Error::AlreadyExists`], `delete` may carry a version precondition;
//! - `update` never touches `status` of kinds with a status subresource, and `update_status`
//!   writes nothing else, as in Kubernetes;
//! - finalizers work as in Kubernetes: `delete` of an object with finalizers only sets
//!   `metadata.deletionTimestamp`; the write that removes the last finalizer of a terminating
//!   object removes the object;
//! - each object is linearizable on its own; nothing is atomic across objects;
//! - a write that returned is durable. A write that failed with [`Error::Backend`] may or may
//!   not have happened (the acknowledgement can be lost after the data landed): callers re-read;
//! - reads may see a write whose durability is still being established (a group commit under
//!   way); nothing can build on such a write and survive while it does not;
//! - [`Store::watch`] tells which objects of a kind changed;
//! - a backend may store some kinds read-only ([`Store::writes`]): the Kubernetes store reads
//!   the cluster's Deployments and StatefulSets but never writes them;
//! - a namespace given to `list` of a cluster-scoped kind is ignored, as in Kubernetes.
//!
//! Stores are async; backends may need a tokio runtime (sled runs its fsync on tokio's blocking
//! pool) and the engine needs tokio's timer for its retry backoff.
//!
//! Backends implement the raw, object-safe [`Store`] on JSON values and reuse [`semantics`] so
//! the rules above are written once. Callers use the typed [`TypedStore`] methods, implemented
//! for every store.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
pub mod semantics;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde_json::Value;

use std::future::Future;
use std::net::IpAddr;

use crate::addressing::JsonString;
use crate::error::Error;
use crate::meta::{Kind, LabelSelector, Object, ObjectKey};
use crate::pool::{IpRecord, SpiderIPPool};

pub use memory::MemStore;

/// What one write of a pool's allocation records changes (see
/// [`Store::update_pool_records`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordsDelta {
    /// Records written (added or replaced).
    pub set: Vec<(IpAddr, IpRecord)>,
    /// IPs whose record is removed.
    pub remove: Vec<IpAddr>,
    /// `status.allocatedIPCount` after the change.
    pub allocated_ip_count: i64,
    /// `status.totalIPCount` after the change.
    pub total_ip_count: i64,
    /// `status.lastAllocatedIP` after the change.
    pub last_allocated_ip: Option<IpAddr>,
}

impl RecordsDelta {
    /// Applies the change to a decoded pool.
    pub fn apply_to(&self, pool: &mut SpiderIPPool) {
        let mut records = pool.records();
        for ip in &self.remove {
            records.remove(ip);
        }
        for (ip, r) in &self.set {
            records.insert(*ip, r.clone());
        }
        let status = pool.status.get_or_insert_with(Default::default);
        status.allocated_ips = (!records.is_empty()).then_some(JsonString(records));
        status.allocated_ip_count = Some(self.allocated_ip_count);
        status.total_ip_count = Some(self.total_ip_count);
        status.last_allocated_ip = self.last_allocated_ip;
    }
}

/// A change notification from [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// An object was written or deleted.
    Changed {
        /// The object.
        key: ObjectKey,
        /// Its version after the change (`None` once deleted).
        version: Option<String>,
    },
    /// Notifications were lost (the watcher fell behind): re-list to catch up.
    Lost,
}

/// A stream of change notifications.
pub type WatchStream = Pin<Box<dyn Stream<Item = WatchEvent> + Send>>;

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The object is gone.
    Gone,
    /// Finalizers hold it: it is terminating, as returned.
    Terminating(Value),
}

/// A versioned object store (see the module documentation for the contract).
#[async_trait]
pub trait Store: Send + Sync {
    /// The object at `key`, if any.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error>;

    /// Every object of `kind` (in `namespace`, for namespaced kinds, when given) whose labels
    /// match `selector`, ordered by namespace and name.
    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error>;

    /// [`Store::list`], with every write acknowledged before the call in it. A store may serve
    /// `list` from a watch of its own, which lags the writes by a moment (the Kubernetes store
    /// with `caching_pool_lists`); this never does. For checks that two objects must not
    /// clash, where a write of a moment ago that the listing misses lets both in (writes
    /// still under way when it runs can be missing: it does not serialize them). By default,
    /// `list`, which is right for stores whose listings never lag; a store that forwards to
    /// another must forward this too.
    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        self.list(kind, namespace, selector).await
    }

    /// Creates an object; fails with [`Error::AlreadyExists`] if the key is taken. Returns the
    /// stored object (uid, creation time and version set).
    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error>;

    /// Replaces an object's metadata and spec (not its status, for kinds with a status
    /// subresource). Fails with [`Error::Conflict`] when `metadata.resourceVersion` is given and
    /// stale, [`Error::NotFound`] when the object does not exist.
    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error>;

    /// Replaces an object's status only; same preconditions as [`Store::update`].
    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error>;

    /// Deletes an object, or marks it terminating when it has finalizers. With `precondition`
    /// the stored version must equal it ([`Error::Conflict`] otherwise).
    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error>;

    /// Applies `delta` to the allocation records of the pool `name` (its `status.allocatedIPs`
    /// and the counts beside them), provided the pool's version is still `version`
    /// ([`Error::Conflict`] otherwise, [`Error::NotFound`] if the pool is gone). Returns the
    /// pool's new version.
    ///
    /// This is `update_status` of the pool restricted to what an allocation changes; the
    /// default does exactly that (read, change, write back), so it costs as much as the pool
    /// holds. A backend may store a pool's records apart from it and write only the records
    /// that changed (sled does): the hot path of the engine then costs the same whatever the
    /// pool holds.
    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        let Some(stored) = self.get(&key).await? else {
            return Err(Error::NotFound(key));
        };
        let mut pool: SpiderIPPool = decode(stored)?;
        if pool.version() != Some(version) {
            return Err(Error::Conflict(key));
        }
        delta.apply_to(&mut pool);
        let written = self
            .update_status(Kind::SpiderIPPool, encode(&pool)?)
            .await?;
        semantics::version_of(&written)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::backend(
                    format!("write {key}"),
                    "the store returned no resourceVersion",
                )
            })
    }

    /// Makes every write this store acknowledged so far durable (see [`deferring_durability`]).
    /// Stores whose writes are durable when they return do nothing.
    async fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Notifications of every later write of `kind`.
    fn watch(&self, kind: Kind) -> WatchStream;

    /// Whether this store writes objects of `kind` (`create`, `update`, `update_status`,
    /// `delete`); true by default. A store that only reads a kind (the Kubernetes store reads
    /// the cluster's apps/v1 workloads, which their users write) refuses those writes with
    /// [`Error::Backend`]; the conformance suite tests each store on the kinds it writes.
    fn writes(&self, kind: Kind) -> bool {
        let _ = kind;
        true
    }

    /// Whether [`Store::watch`] reports every write of the store, so that a cache kept current
    /// by it is exact (true of stores written only by this process: in memory, sled). The
    /// engine caches decoded pools only then.
    fn watches_every_write(&self) -> bool {
        false
    }
}

/// The [`WatchStream`] of one kind over a broadcast channel of every kind's events (what the
/// in-process backends use). A watcher that falls behind gets [`WatchEvent::Lost`].
pub fn broadcast_watch(
    rx: tokio::sync::broadcast::Receiver<WatchEvent>,
    kind: Kind,
) -> WatchStream {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(WatchEvent::Changed { key, version }) if key.kind == kind => {
                    return Some((WatchEvent::Changed { key, version }, rx));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => return Some((WatchEvent::Lost, rx)),
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

/// Typed access to any [`Store`].
#[async_trait]
pub trait TypedStore: Store {
    /// The object `name` (in `namespace` for namespaced kinds).
    async fn get_as<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let key = ObjectKey {
            kind: T::KIND,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        self.get(&key).await?.map(decode::<T>).transpose()
    }

    /// Every object of a kind matching `selector`.
    async fn list_as<T: Object>(&self, selector: Option<&LabelSelector>) -> Result<Vec<T>, Error> {
        self.list(T::KIND, None, selector)
            .await?
            .into_iter()
            .map(decode::<T>)
            .collect()
    }

    /// Every object of a kind, with every write acknowledged before the call
    /// ([`Store::list_current`]).
    async fn list_current_as<T: Object>(&self) -> Result<Vec<T>, Error> {
        self.list_current(T::KIND, None, None)
            .await?
            .into_iter()
            .map(decode::<T>)
            .collect()
    }

    /// Creates `object`, returning it as stored.
    async fn create_as<T: Object>(&self, object: &T) -> Result<T, Error> {
        decode(self.create(T::KIND, encode(object)?).await?)
    }

    /// Updates `object`'s metadata and spec, returning it as stored.
    async fn update_as<T: Object>(&self, object: &T) -> Result<T, Error> {
        decode(self.update(T::KIND, encode(object)?).await?)
    }

    /// Updates `object`'s status, returning it as stored.
    async fn update_status_as<T: Object>(&self, object: &T) -> Result<T, Error> {
        decode(self.update_status(T::KIND, encode(object)?).await?)
    }

    /// Deletes `object` if its version is still the stored one.
    async fn delete_as<T: Object>(&self, object: &T) -> Result<Deleted, Error> {
        self.delete(&object.key(), object.version()).await
    }
}

impl<S: Store + ?Sized> TypedStore for S {}

/// Reads a stored document as `T`.
pub fn decode<T: Object>(value: Value) -> Result<T, Error> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    serde_json::from_value(value).map_err(|e| Error::Malformed {
        kind: T::KIND,
        name,
        reason: e.to_string(),
    })
}

/// Writes `T` as a document.
pub fn encode<T: Object>(object: &T) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::Malformed {
        kind: T::KIND,
        name: object.name().to_string(),
        reason: e.to_string(),
    })
}

/// A shared store is a store.
#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        (**self).get(key).await
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        (**self).list(kind, namespace, selector).await
    }

    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        (**self).list_current(kind, namespace, selector).await
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        (**self).create(kind, object).await
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        (**self).update(kind, object).await
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        (**self).update_status(kind, object).await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        (**self).delete(key, precondition).await
    }

    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        (**self).update_pool_records(name, version, delta).await
    }

    async fn sync(&self) -> Result<(), Error> {
        (**self).sync().await
    }

    fn watch(&self, kind: Kind) -> WatchStream {
        (**self).watch(kind)
    }

    fn watches_every_write(&self) -> bool {
        (**self).watches_every_write()
    }

    fn writes(&self, kind: Kind) -> bool {
        (**self).writes(kind)
    }
}

tokio::task_local! {
    static DEFERRED_DURABILITY: ();
}

/// Whether the current task runs inside [`deferring_durability`]: a backend may then return
/// from a write before it is durable, and make it durable in [`Store::sync`].
pub fn durability_deferred() -> bool {
    DEFERRED_DURABILITY.try_with(|_| ()).is_ok()
}

/// Runs `work` with the store's writes returning before they are durable, then makes them all
/// durable with one [`Store::sync`] — also when `work` failed — before returning.
///
/// An operation of several writes (a pool's records, then the pod's endpoint) thus waits for
/// the disk once instead of once per write. This is safe for a store that recovers its writes
/// in order, as a prefix (sled's log does): a crash then leaves what a crash between two of the
/// operation's writes would leave, which the engine's write order already makes harmless; and
/// anything another operation reads and builds on is made durable by that operation's own sync
/// before it answers. The caller must not answer anyone before this returns.
pub async fn deferring_durability<S: Store + ?Sized, T, E: From<Error>>(
    store: &S,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = DEFERRED_DURABILITY.scope((), work).await;
    store.sync().await?;
    result
}
