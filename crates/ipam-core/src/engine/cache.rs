//! A read cache of decoded pools.
//!
//! A pool carries every allocation record of its IPs, so decoding one costs in proportion to
//! what it holds, and an allocation reads pools several times (selection, the write itself).
//! When the store reports every write through [`Store::watch`] (the in-process stores do), the
//! engine keeps the pools it decoded, drains the watch before each read, and drops an entry
//! whose version moved. Its own writes put the written pool back under the new version.
//!
//! The cache only ever saves work: every write still carries the version it was based on, so a
//! stale entry can only cause a conflict — and the conflict's write is in the watch, so the
//! retry reads afresh.
//!
//! A listing may lag what the watch and direct reads already showed (a Kubernetes agent lists
//! from a watch of its own). So the cache also keeps the names of the pools known to exist and
//! of those known deleted: a listing that lacks a known pool gets it from the cache or a direct
//! read, and one that still shows a deleted pool loses it. Without that, an ADD could be refused
//! a pool it had seen a moment before.
//!
//! [`ReservedCache`] keeps the union of the reserved IPs the same way, dropped on any
//! notification of a SpiderReservedIP. No version guards its use: with a store whose
//! notifications come after the write (Kubernetes), an allocation in that moment may still
//! hand out an IP just reserved, as Spiderpool's informer caches may; with the in-process
//! stores the notification is sent before the write returns, so the cache is exact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};

use super::Engine;
use crate::error::Error;
use crate::meta::{Kind, Object};
use crate::pool::SpiderIPPool;
use crate::range::IpSet;
use crate::reserved::SpiderReservedIP;
use crate::store::{RecordsDelta, Store, TypedStore, WatchEvent, WatchStream};

pub(crate) struct PoolCache {
    state: Mutex<State>,
}

struct State {
    /// `None` when the store's watch does not see every write: no caching then.
    watch: Option<WatchStream>,
    pools: BTreeMap<String, Arc<SpiderIPPool>>,
    /// Whether `pools` holds every pool of the store (but the lent ones).
    complete: bool,
    /// Pools taken out to be modified (see `pool_owned`), back when written or returned.
    lent: BTreeSet<String>,
    /// The pools known to exist and known deleted (see the module documentation).
    names: Names,
    /// Notifications applied so far. A read is cached only if none arrived while it ran: a
    /// write that landed meanwhile may be missing from it, and its notification, drained by
    /// someone else, would not evict it.
    epoch: u64,
    /// Pools `pool_owned` had to copy because a reader still held them: each copy costs what
    /// the pool holds, so the allocation path must not cause any (see the tests).
    #[cfg(test)]
    copies: u64,
}

impl PoolCache {
    pub(crate) fn new<S: Store>(store: &S) -> Self {
        let watch = store
            .watches_every_write()
            .then(|| store.watch(Kind::SpiderIPPool));
        PoolCache {
            state: Mutex::new(State {
                watch,
                pools: BTreeMap::new(),
                complete: false,
                lent: Default::default(),
                names: Names::default(),
                epoch: 0,
                #[cfg(test)]
                copies: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Applies every notification already delivered; returns whether caching is on.
    fn drain(&mut self) -> bool {
        let Some(watch) = self.watch.as_mut() else {
            return false;
        };
        while let Some(Some(event)) = watch.next().now_or_never() {
            self.epoch += 1;
            match event {
                WatchEvent::Changed { key, version } => {
                    self.names.exists(&key.name, version.is_some());
                    let current = self
                        .pools
                        .get(&key.name)
                        .map(|p| p.version().map(str::to_string));
                    if let Some(cached) = current {
                        if cached != version {
                            self.pools.remove(&key.name);
                            self.complete = false;
                        }
                    } else if version.is_some() {
                        // A pool we do not hold appeared.
                        self.complete = false;
                    }
                }
                WatchEvent::Lost => {
                    self.pools.clear();
                    self.complete = false;
                    // A deletion may have been undone unseen; the known pools are read again
                    // where a listing lacks them.
                    self.names.gone.clear();
                }
            }
        }
        true
    }
}

/// What the watch and direct reads showed of the pools' existence, which a lagging listing may
/// not show yet.
#[derive(Default)]
struct Names {
    /// Every pool a listing, a direct read or the watch showed, less those since reported
    /// deleted: a listing must show them.
    known: BTreeSet<String>,
    /// Pools the watch or a direct read reported deleted, until a listing no longer shows them.
    gone: BTreeSet<String>,
}

impl Names {
    /// Notes that the watch or a direct read showed pool `name` existing, or gone.
    fn exists(&mut self, name: &str, exists: bool) {
        if exists {
            self.gone.remove(name);
            // Every write to every pool comes here: no allocation for a name already known.
            if !self.known.contains(name) {
                self.known.insert(name.to_string());
            }
        } else {
            self.known.remove(name);
            self.gone.insert(name.to_string());
        }
    }
}

/// The reserved IPs (see the module documentation).
pub(crate) struct ReservedCache {
    state: Mutex<ReservedState>,
}

struct ReservedState {
    /// `None` when the store's watch does not see every write: no caching then.
    watch: Option<WatchStream>,
    ips: Option<IpSet>,
    /// Notifications applied so far (see `State::epoch`).
    epoch: u64,
}

impl ReservedCache {
    pub(crate) fn new<S: Store>(store: &S) -> Self {
        let watch = store
            .watches_every_write()
            .then(|| store.watch(Kind::SpiderReservedIP));
        ReservedCache {
            state: Mutex::new(ReservedState {
                watch,
                ips: None,
                epoch: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReservedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReservedState {
    /// Applies the notifications that arrived; false when there is no watch (or it ended).
    fn drain(&mut self) -> bool {
        let Some(watch) = self.watch.as_mut() else {
            return false;
        };
        loop {
            match watch.next().now_or_never() {
                Some(Some(_)) => {
                    self.epoch += 1;
                    self.ips = None;
                }
                Some(None) => {
                    self.watch = None;
                    self.ips = None;
                    return false;
                }
                None => return true,
            }
        }
    }
}

impl<S: Store> Engine<S> {
    /// Every reserved IP (of reservations that are not being deleted), from the cache when the
    /// store's watch keeps it current.
    pub async fn reserved_ips(&self) -> Result<IpSet, Error> {
        let epoch = {
            let mut st = self.reserved.lock();
            if st.drain()
                && let Some(ips) = &st.ips
            {
                return Ok(ips.clone());
            }
            st.epoch
        };
        let ips = self
            .store
            .list_as::<SpiderReservedIP>(None)
            .await?
            .iter()
            .filter(|r| !r.metadata.is_terminating())
            .fold(IpSet::new(), |acc, r| acc.union(&r.spec.ips));
        let mut st = self.reserved.lock();
        if st.drain() && st.epoch == epoch {
            st.ips = Some(ips.clone());
        }
        Ok(ips)
    }

    /// Every pool, from the cache when it holds them all.
    pub(crate) async fn pools(&self) -> Result<Vec<Arc<SpiderIPPool>>, Error> {
        let epoch = {
            let mut st = self.cache.lock();
            if st.drain() && st.complete && st.lent.is_empty() {
                return Ok(st.pools.values().cloned().collect());
            }
            st.epoch
        };
        let listed: Vec<Arc<SpiderIPPool>> = self
            .store
            .list_as::<SpiderIPPool>(None)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let listed = self.mend_listing(listed).await?;
        let mut st = self.cache.lock();
        if st.drain() && st.epoch == epoch && st.lent.is_empty() {
            st.pools = listed
                .iter()
                .map(|p| (p.metadata.name.clone(), p.clone()))
                .collect();
            st.complete = true;
        }
        Ok(listed)
    }

    /// `listed` as it would be if the listing did not lag: without the pools known deleted,
    /// with the pools known to exist that it lacks (from the cache, or read directly).
    async fn mend_listing(
        &self,
        mut listed: Vec<Arc<SpiderIPPool>>,
    ) -> Result<Vec<Arc<SpiderIPPool>>, Error> {
        let mut unread = Vec::new();
        {
            let mut st = self.cache.lock();
            if !st.drain() {
                // No watch: nothing is known beyond the listing.
                return Ok(listed);
            }
            // A deletion the listing no longer shows needs no mending any more.
            let still_shown: BTreeSet<String> = listed
                .iter()
                .map(|p| &p.metadata.name)
                .filter(|n| st.names.gone.contains(*n))
                .cloned()
                .collect();
            st.names.gone = still_shown;
            listed.retain(|p| !st.names.gone.contains(&p.metadata.name));
            let shown: BTreeSet<&str> = listed.iter().map(|p| p.metadata.name.as_str()).collect();
            let mut lacking = Vec::new();
            for name in st
                .names
                .known
                .iter()
                .filter(|n| !shown.contains(n.as_str()))
            {
                match st.pools.get(name) {
                    Some(p) => lacking.push(p.clone()),
                    None => unread.push(name.clone()),
                }
            }
            st.names
                .known
                .extend(listed.iter().map(|p| p.metadata.name.clone()));
            listed.extend(lacking);
        }
        for name in unread {
            if let Some(p) = self.pool(&name).await? {
                listed.push(p);
            }
        }
        listed.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(listed)
    }

    /// A pool to modify: taken out of the cache, without a copy when nobody else holds it.
    pub(crate) async fn pool_owned(&self, name: &str) -> Result<Option<SpiderIPPool>, Error> {
        let Some(arc) = self.pool(name).await? else {
            return Ok(None);
        };
        {
            let mut st = self.cache.lock();
            if st.pools.get(name).is_some_and(|p| Arc::ptr_eq(p, &arc)) {
                st.pools.remove(name);
                st.lent.insert(name.to_string());
            }
        }
        Ok(Some(Arc::try_unwrap(arc).unwrap_or_else(|shared| {
            #[cfg(test)]
            {
                self.cache.lock().copies += 1;
            }
            (*shared).clone()
        })))
    }

    /// How many pools `pool_owned` has copied so far.
    #[cfg(test)]
    pub(crate) fn pool_copies(&self) -> u64 {
        self.cache.lock().copies
    }

    /// Puts back a pool taken with `pool_owned` and left unchanged.
    pub(crate) fn return_pool(&self, pool: SpiderIPPool) {
        let mut st = self.cache.lock();
        let name = pool.metadata.name.clone();
        if st.lent.remove(&name) {
            st.pools.insert(name, Arc::new(pool));
            st.drain();
        }
    }

    /// Drops a pool from the cache (its write conflicted: the cached copy is stale).
    pub(crate) fn forget_pool(&self, name: &str) {
        let mut st = self.cache.lock();
        let lent = st.lent.remove(name);
        if st.pools.remove(name).is_some() || lent {
            st.complete = false;
        }
    }

    /// Notes a write of the engine's own to a pool other than through `write_pool_records` (a
    /// create, a spec or status rewrite, a delete); objects of other kinds are ignored. With a
    /// store whose notifications come a moment after the write (Kubernetes) the cache would not
    /// show it until then: a pool the engine just created would be missing from the very next
    /// selection. So the entry goes and the next full read lists the store afresh.
    pub(crate) fn pool_written(&self, kind: Kind, name: &str) {
        if kind != Kind::SpiderIPPool {
            return;
        }
        let mut st = self.cache.lock();
        st.lent.remove(name);
        st.pools.remove(name);
        st.complete = false;
    }

    /// One pool.
    pub(crate) async fn pool(&self, name: &str) -> Result<Option<Arc<SpiderIPPool>>, Error> {
        let epoch = {
            let mut st = self.cache.lock();
            if st.drain()
                && let Some(p) = st.pools.get(name)
            {
                return Ok(Some(p.clone()));
            }
            st.epoch
        };
        let got = self
            .store
            .get_as::<SpiderIPPool>(None, name)
            .await?
            .map(Arc::new);
        let mut st = self.cache.lock();
        let caching = st.drain();
        if caching && st.epoch == epoch {
            st.names.exists(name, got.is_some());
            if let Some(p) = &got {
                st.pools.insert(name.to_string(), p.clone());
            }
        }
        Ok(got)
    }

    /// Writes the records `delta` of `pool` (whose stored version is `version`) and caches
    /// `pool`, which already holds the change, under the new version. Returns that version.
    pub(crate) async fn write_pool_records(
        &self,
        mut pool: SpiderIPPool,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        let name = pool.metadata.name.clone();
        let new = self
            .store
            .update_pool_records(&name, version, delta)
            .await?;
        pool.metadata.resource_version = Some(new.clone());
        // Put first, then drain: the notification of this very write then finds its version
        // cached and keeps it; one of a later write evicts it.
        let mut st = self.cache.lock();
        if st.watch.is_some() {
            st.lent.remove(&name);
            st.pools.insert(name, Arc::new(pool));
            st.drain();
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{AllocateRequest, AnyObject, Engine, ReleaseRequest};
    use crate::store::MemStore;
    use crate::{NicRequest, PodContext, SpiderIPPool, ips};

    fn request(i: usize) -> AllocateRequest {
        AllocateRequest {
            pod: PodContext {
                namespace: "default".into(),
                name: format!("pod-{i}"),
                ..Default::default()
            },
            pod_uid: format!("uid-{i}"),
            container_id: format!("c{i}"),
            netns: None,
            nics: vec![NicRequest {
                interface: "eth0".into(),
                default_ipv4_pools: vec!["big".into()],
                ..Default::default()
            }],
        }
    }

    fn release(i: usize) -> ReleaseRequest {
        ReleaseRequest {
            namespace: "default".into(),
            name: format!("pod-{i}"),
            pod_uid: format!("uid-{i}"),
            container_id: format!("c{i}"),
            ..Default::default()
        }
    }

    /// An ADD and a DEL take the cached pool over and put it back: they never copy it, which
    /// would cost as much as the pool holds records (5,000 records made an agent-mode ADD twice
    /// a DEL's time when the selection's listing was still held during the write).
    #[tokio::test]
    async fn allocations_and_releases_never_copy_a_pool() {
        let engine = Engine::new(MemStore::new());
        let pool = SpiderIPPool::new("big", "10.7.0.0/16".parse().unwrap(), ips!["10.7.0.0/16"]);
        engine.apply(AnyObject::Pool(pool)).await.unwrap();
        for i in 0..20 {
            engine.allocate(&request(i)).await.unwrap();
        }
        for i in 0..20 {
            engine.release(&release(i)).await.unwrap();
        }
        assert_eq!(engine.pool_copies(), 0, "pools copied by ADD and DEL");

        // The negative control: a reader holding the pool while an ADD writes it costs a copy.
        let held = engine.pools().await.unwrap();
        engine.allocate(&request(20)).await.unwrap();
        drop(held);
        assert_eq!(engine.pool_copies(), 1, "a held pool must be copied");
    }
}
