//! Group commit of pool writes.
//!
//! Every change of IP ownership is a write of the pool's status with the pool's version as
//! precondition. Concurrent requests on one pool are merged: the first caller becomes the
//! leader, takes every operation queued for the pool, applies them all to one fresh read and
//! writes once. On a conflict the leader re-reads and re-applies the whole batch, since nothing
//! of it was written. Operations are intents ("an IP for this holder", "free what this container
//! holds"), so re-applying them to newer data is always right.
//!
//! The queue is `queue`'s, shared with `Engine::modify`. If a leader is cancelled (its caller
//! went away), the queue is dropped: the waiting callers see their channel close and resubmit.
//! An operation that was written before the cancellation is found again by the resubmission,
//! because allocation is idempotent per holder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::Engine;
use super::queue::{Queues, owes_sync, shared_failure};
use crate::addressing::JsonString;
use crate::allocator::Allocator;
use crate::error::Error;
use crate::meta::{Kind, ObjectKey};
use crate::pool::{IpRecord, SpiderIPPool};
use crate::range::IpSet;
use crate::store::{RecordsDelta, Store, durability_deferred};

/// What to do in one pool.
#[derive(Debug, Clone)]
pub(crate) enum PoolOp {
    /// Take an IP for `record`. Idempotent: an IP the pool already records for the same
    /// container and interface (or the same pod uid and interface) is returned instead,
    /// re-stamped with `record`. With `adopt`, a record of the same pod uid and interface that
    /// names no container (the controller reserved it, or Spiderpool wrote it) is returned as
    /// it is, with no write; a `record` naming no container (a reservation) never replaces
    /// one that names a container.
    Allocate { record: IpRecord, adopt: bool },
    /// Re-stamp `ip`, held by the pod name of `record`, with `record` (a StatefulSet pod came
    /// back under a new uid, or a new sandbox of the pod). Fails when the IP is not held by
    /// that pod name. `adopt` as for `Allocate`.
    Restamp {
        ip: IpAddr,
        record: IpRecord,
        adopt: bool,
    },
    /// Free the IPs whose record matches.
    Release { matcher: Matcher },
    /// Keep the IPs whose record matches for the pod name, detached from the container (a
    /// StatefulSet pod its StatefulSet keeps went away). A terminating pool keeps nothing for a
    /// pod name: it frees them, so that it can go.
    Detach { matcher: Matcher },
}

/// Which records a release frees.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// Exactly this record on this IP (GC: re-validated against the stored holder).
    Exact { ip: IpAddr, record: IpRecord },
    /// What one container holds, on some interfaces or all.
    Container {
        container_id: String,
        pod_uid: String,
        interfaces: Option<Vec<String>>,
    },
    /// One IP if the pod name holds it.
    Ip { ip: IpAddr, pod: String },
    /// What a pod name holds detached from any container (a StatefulSet pod whose name is no
    /// longer kept).
    Detached { pod: String },
}

impl Matcher {
    fn matches(&self, ip: &IpAddr, r: &IpRecord) -> bool {
        match self {
            Matcher::Exact { ip: want, record } => want == ip && record == r,
            Matcher::Container {
                container_id,
                pod_uid,
                interfaces,
            } => {
                let holder = match &r.container_id {
                    Some(c) => c == container_id,
                    // Records written by Spiderpool carry no container id.
                    None => !pod_uid.is_empty() && &r.pod_uid == pod_uid,
                };
                holder
                    && interfaces
                        .as_ref()
                        .is_none_or(|ifs| r.interface.as_ref().is_none_or(|i| ifs.contains(i)))
            }
            Matcher::Ip { ip: want, pod } => want == ip && &r.pod == pod,
            Matcher::Detached { pod } => &r.pod == pod && r.container_id.is_none(),
        }
    }
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpResult {
    /// An IP for the holder; `fresh` when taken by this operation (not found again).
    Allocated { ip: IpAddr, fresh: bool },
    /// The pool has no free IP.
    Exhausted,
    /// The pool takes no new allocation (disabled or terminating).
    Closed(&'static str),
    /// The pool does not exist.
    Missing,
    /// Whether the re-stamp found the IP held by the pod.
    Restamped(bool),
    /// The IPs freed.
    Released(Vec<IpAddr>),
    /// The IPs kept for the pod name, detached from the container.
    Detached(Vec<IpAddr>),
}

/// An operation, whether its caller defers durability, and where its answer goes.
type Waiter = (PoolOp, bool, oneshot::Sender<Result<OpResult, Error>>);

/// Per-pool queues and the cached allocator of each pool.
#[derive(Default)]
pub(crate) struct Batcher {
    queues: Queues<String, Waiter>,
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    version: String,
    reserved: IpSet,
    allocator: Allocator,
    holders: Holders,
}

/// Who holds which IPs of one pool: the pool's records indexed by container id, by pod uid
/// and (for records detached from any container) by pod name, so that an operation finds its
/// holder's IPs without reading every record of the pool. Kept with the cached allocator, and
/// rebuilt with it when the pool changed behind the engine's back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Holders {
    by_container: HashMap<String, BTreeSet<IpAddr>>,
    by_uid: HashMap<String, BTreeSet<IpAddr>>,
    detached: HashMap<String, BTreeSet<IpAddr>>,
}

impl Holders {
    fn build<'a>(records: impl IntoIterator<Item = (&'a IpAddr, &'a IpRecord)>) -> Self {
        let mut holders = Holders::default();
        for (ip, r) in records {
            holders.add(*ip, r);
        }
        holders
    }

    /// The index entries of `r`: its container, its pod uid (an empty one is never looked up,
    /// so not indexed), and its pod name when no container holds it.
    fn keys<'r>(
        &mut self,
        r: &'r IpRecord,
    ) -> impl Iterator<Item = (&mut HashMap<String, BTreeSet<IpAddr>>, &'r str)> {
        let Holders {
            by_container,
            by_uid,
            detached,
        } = self;
        let container = r.container_id.as_deref().map(|c| (by_container, c));
        let uid = (!r.pod_uid.is_empty()).then_some((by_uid, r.pod_uid.as_str()));
        let pod = r
            .container_id
            .is_none()
            .then_some((detached, r.pod.as_str()));
        container.into_iter().chain(uid).chain(pod)
    }

    fn add(&mut self, ip: IpAddr, r: &IpRecord) {
        for (index, key) in self.keys(r) {
            index.entry(key.to_string()).or_default().insert(ip);
        }
    }

    fn remove(&mut self, ip: IpAddr, r: &IpRecord) {
        for (index, key) in self.keys(r) {
            if let Some(ips) = index.get_mut(key) {
                ips.remove(&ip);
                if ips.is_empty() {
                    index.remove(key);
                }
            }
        }
    }

    /// The IPs whose records may match `matcher`, in address order (a superset: the caller
    /// checks each with [`Matcher::matches`]).
    fn candidates(&self, matcher: &Matcher) -> Vec<IpAddr> {
        match matcher {
            Matcher::Exact { ip, .. } | Matcher::Ip { ip, .. } => vec![*ip],
            Matcher::Container {
                container_id,
                pod_uid,
                ..
            } => {
                let mut ips = self.of_container(container_id);
                ips.extend(self.of_uid(pod_uid));
                ips.sort_unstable();
                ips.dedup();
                ips
            }
            Matcher::Detached { pod } => lookup(&self.detached, pod),
        }
    }

    /// The IPs held by a container, in address order.
    fn of_container(&self, container_id: &str) -> Vec<IpAddr> {
        lookup(&self.by_container, container_id)
    }

    /// The IPs held by a pod uid, in address order.
    fn of_uid(&self, pod_uid: &str) -> Vec<IpAddr> {
        lookup(&self.by_uid, pod_uid)
    }
}

fn lookup(index: &HashMap<String, BTreeSet<IpAddr>>, key: &str) -> Vec<IpAddr> {
    index.get(key).into_iter().flatten().copied().collect()
}

/// A pool's records being changed by a batch, with their index and the IPs touched.
struct Records<'a> {
    map: &'a mut BTreeMap<IpAddr, IpRecord>,
    holders: &'a mut Holders,
    touched: &'a mut Vec<IpAddr>,
}

impl Records<'_> {
    fn get(&self, ip: &IpAddr) -> Option<&IpRecord> {
        self.map.get(ip)
    }

    /// The first IP (in address order) among `candidates` whose record passes `keep`.
    fn find(&self, candidates: Vec<IpAddr>, keep: impl Fn(&IpRecord) -> bool) -> Option<IpAddr> {
        candidates
            .into_iter()
            .find(|ip| self.map.get(ip).is_some_and(&keep))
    }

    /// Records `ip` as held by `record` (no write when it already is).
    fn set(&mut self, ip: IpAddr, record: &IpRecord) {
        if self.map.get(&ip) == Some(record) {
            return;
        }
        if let Some(old) = self.map.insert(ip, record.clone()) {
            self.holders.remove(ip, &old);
        }
        self.holders.add(ip, record);
        self.touched.push(ip);
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(old) = self.map.remove(&ip) {
            self.holders.remove(ip, &old);
            self.touched.push(ip);
        }
    }

    /// The IPs whose records match `matcher`, in address order.
    fn matching(&self, matcher: &Matcher) -> Vec<IpAddr> {
        let mut ips = self.holders.candidates(matcher);
        ips.retain(|ip| self.map.get(ip).is_some_and(|r| matcher.matches(ip, r)));
        ips
    }
}

impl<S: Store> Engine<S> {
    /// Runs `op` on `pool`, merged with concurrent operations on the same pool.
    pub(crate) async fn pool_op(&self, pool: &str, op: PoolOp) -> Result<OpResult, Error> {
        let mut results = self.pool_ops(pool, vec![op]).await;
        results.pop().expect("one result per operation")
    }

    /// Runs `ops` on `pool`, in one batch (one write) unless a batch under way takes some
    /// first, merged with concurrent operations on the same pool. One result per operation,
    /// in order.
    pub(crate) async fn pool_ops(
        &self,
        pool: &str,
        ops: Vec<PoolOp>,
    ) -> Vec<Result<OpResult, Error>> {
        if !self.config.batching {
            // Each operation its own write, durable when it returns unless the caller defers.
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.extend(self.commit(pool, std::slice::from_ref(&op)).await);
            }
            return results;
        }
        let mut answers: Vec<Option<Result<OpResult, Error>>> = ops.iter().map(|_| None).collect();
        loop {
            let mut waiters = Vec::new();
            let mut pending = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                if answers[i].is_none() {
                    let (tx, rx) = oneshot::channel();
                    waiters.push((op.clone(), durability_deferred(), tx));
                    pending.push((i, rx));
                }
            }
            if pending.is_empty() {
                return answers.into_iter().flatten().collect();
            }
            if let Some(mut leader) = self.batcher.queues.join_many(pool, waiters) {
                while let Some(batch) = leader.next_batch() {
                    let ops: Vec<PoolOp> = batch.iter().map(|(op, _, _)| op.clone()).collect();
                    let mut results = self.commit(pool, &ops).await;
                    if owes_sync(batch.iter().map(|(_, defers, _)| *defers))
                        && let Err(e) = self.store.sync().await
                    {
                        let key = ObjectKey::cluster(Kind::SpiderIPPool, pool);
                        for ((_, defers, _), result) in batch.iter().zip(&mut results) {
                            if !defers {
                                *result = Err(shared_failure(&key, &e));
                            }
                        }
                    }
                    for ((_, _, tx), result) in batch.into_iter().zip(results) {
                        // A caller that went away does not care.
                        let _ = tx.send(result);
                    }
                }
            }
            for (i, rx) in pending {
                // A leader cancelled before answering leaves the operation unanswered: it is
                // submitted again.
                answers[i] = rx.await.ok();
            }
        }
    }

    /// Applies `ops` to a fresh read of the pool and writes once, retrying on conflict.
    async fn commit(&self, name: &str, ops: &[PoolOp]) -> Vec<Result<OpResult, Error>> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        let mut attempt = 0;
        loop {
            let began = std::time::Instant::now();
            let error = match self.try_commit(name, ops).await {
                Ok(results) => return results,
                Err(Error::NotFound(_)) => {
                    return ops.iter().map(|_| Ok(OpResult::Missing)).collect();
                }
                Err(Error::Conflict(_)) => match self.conflicted(&key, &mut attempt, began).await {
                    Ok(()) => continue,
                    Err(exhausted) => exhausted,
                },
                Err(e) => e,
            };
            return ops
                .iter()
                .map(|_| Err(shared_failure(&key, &error)))
                .collect();
        }
    }

    async fn try_commit(
        &self,
        name: &str,
        ops: &[PoolOp],
    ) -> Result<Vec<Result<OpResult, Error>>, Error> {
        let Some(mut pool) = self.pool_owned(name).await? else {
            return Ok(ops.iter().map(|_| Ok(OpResult::Missing)).collect());
        };
        let version = pool.metadata.resource_version.clone().unwrap_or_default();
        let reserved = match self.reserved_ips().await {
            Ok(r) => r,
            Err(e) => {
                self.return_pool(pool);
                return Err(e);
            }
        };
        let (mut allocator, mut holders) = self.cached_allocator(name, &version, &reserved, &pool);
        let mut records = pool
            .status
            .as_mut()
            .and_then(|s| s.allocated_ips.take())
            .map(|r| r.0)
            .unwrap_or_default();
        let mut touched = Vec::new();
        let mut changing = Records {
            map: &mut records,
            holders: &mut holders,
            touched: &mut touched,
        };
        let results: Vec<_> = ops
            .iter()
            .map(|op| Ok(apply(op, &pool, &mut changing, &mut allocator)))
            .collect();
        debug_assert_eq!(
            holders,
            Holders::build(&records),
            "the holder index follows the records"
        );
        if touched.is_empty() {
            if let Some(st) = pool.status.as_mut() {
                st.allocated_ips = (!records.is_empty()).then_some(JsonString(records));
            }
            self.return_pool(pool);
            self.store_allocator(name, version, reserved, allocator, holders);
            return Ok(results);
        }
        touched.sort_unstable();
        touched.dedup();
        let mut delta = RecordsDelta::default();
        for ip in touched {
            match records.get(&ip) {
                Some(r) => delta.set.push((ip, r.clone())),
                None => delta.remove.push(ip),
            }
        }
        pool.set_records(records);
        let status = pool.status.get_or_insert_with(Default::default);
        status.last_allocated_ip = allocator.last_allocated();
        delta.allocated_ip_count = status.allocated_ip_count.unwrap_or(0);
        delta.total_ip_count = status.total_ip_count.unwrap_or(0);
        delta.last_allocated_ip = status.last_allocated_ip;
        let version = match self.write_pool_records(pool, &version, &delta).await {
            Ok(v) => v,
            Err(e) => {
                self.forget_pool(name);
                return Err(e);
            }
        };
        self.store_allocator(name, version, reserved, allocator, holders);
        Ok(results)
    }

    /// The allocator and holder index of `pool`: the cached ones when the pool has not changed
    /// since, else built afresh.
    fn cached_allocator(
        &self,
        name: &str,
        version: &str,
        reserved: &IpSet,
        pool: &SpiderIPPool,
    ) -> (Allocator, Holders) {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.remove(name) {
            Some(c) if c.version == version && &c.reserved == reserved => (c.allocator, c.holders),
            _ => (
                pool.allocator(reserved),
                Holders::build(pool.iter_records()),
            ),
        }
    }

    fn store_allocator(
        &self,
        name: &str,
        version: String,
        reserved: IpSet,
        allocator: Allocator,
        holders: Holders,
    ) {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            name.to_string(),
            Cached {
                version,
                reserved,
                allocator,
                holders,
            },
        );
    }

    /// Forgets the cached allocator of a pool whose spec changed.
    pub(crate) fn forget_allocator(&self, name: &str) {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(name);
    }
}

/// Whether `held`, a record of the same pod and interface as `wanted`, serves it as it is:
/// both name the same pod incarnation (uid), and `wanted` names no container (a reservation
/// finding the pod's record), or `held` names none and the caller `adopt`s (an ADD taking its
/// pod's reservation). Such a record belongs to the pod, whichever of its sandboxes runs: a
/// release matches it by the pod's uid when the pod's endpoint names the releasing container.
/// (A StatefulSet pod does not adopt: see `allocate_now`.)
fn adopts(held: Option<&IpRecord>, wanted: &IpRecord, adopt: bool) -> bool {
    held.is_some_and(|r| {
        ((adopt && r.container_id.is_none()) || wanted.container_id.is_none())
            && !r.pod_uid.is_empty()
            && r.pod_uid == wanted.pod_uid
            && r.pod == wanted.pod
            && r.interface == wanted.interface
    })
}

/// Frees the IPs whose record matches.
fn release(records: &mut Records<'_>, allocator: &mut Allocator, matcher: &Matcher) -> OpResult {
    let gone = records.matching(matcher);
    for ip in &gone {
        records.remove(*ip);
        allocator.release(ip);
    }
    OpResult::Released(gone)
}

fn apply(
    op: &PoolOp,
    pool: &SpiderIPPool,
    records: &mut Records<'_>,
    allocator: &mut Allocator,
) -> OpResult {
    match op {
        PoolOp::Allocate { record, adopt } => {
            let same_container = record.container_id.as_deref().and_then(|container_id| {
                records.find(records.holders.of_container(container_id), |r| {
                    r.container_id == record.container_id && r.interface == record.interface
                })
            });
            let same_pod = || {
                records.find(records.holders.of_uid(&record.pod_uid), |r| {
                    r.pod_uid == record.pod_uid
                        && r.pod == record.pod
                        && r.interface == record.interface
                })
            };
            // The same container asking again, or the same pod with a new sandbox: it keeps
            // its IP (re-stamped with the new holder). A record of the pod that names no
            // container (reserved by the controller before the ADD, or Spiderpool's) stays as
            // it is where the caller adopts: the pod's endpoint says which container holds it,
            // and the ADD writes no pool. Nor does a reservation replace a container's record.
            if let Some(ip) = same_container.or_else(same_pod) {
                if !adopts(records.get(&ip), record, *adopt) {
                    records.set(ip, record);
                }
                return OpResult::Allocated { ip, fresh: false };
            }
            if pool.spec.disable == Some(true) {
                return OpResult::Closed("disabled");
            }
            if pool.metadata.is_terminating() {
                return OpResult::Closed("terminating");
            }
            match allocator.allocate() {
                Ok(ip) => {
                    records.set(ip, record);
                    OpResult::Allocated { ip, fresh: true }
                }
                Err(_) => OpResult::Exhausted,
            }
        }
        PoolOp::Restamp { ip, record, adopt } => match records.get(ip) {
            Some(r) if adopts(Some(r), record, *adopt) => OpResult::Restamped(true),
            Some(r) if r.pod == record.pod && r.interface == record.interface => {
                // A NIC allocated ahead by its pod's first ADD records no network, and an ADD
                // of another NIC confirms this one with none: within one container, a record
                // keeps its network then, instead of rewriting the pool for the name alone.
                let unnamed = r.network.is_none() || record.network.is_none();
                let network = if unnamed && r.container_id == record.container_id {
                    r.network.clone()
                } else {
                    record.network.clone()
                };
                let record = IpRecord {
                    network,
                    ..record.clone()
                };
                records.set(*ip, &record);
                OpResult::Restamped(true)
            }
            Some(_) => OpResult::Restamped(false),
            None => {
                // The record went (GC after a crash): take the IP back if it is free.
                let free = allocator.is_allocatable(ip) && !allocator.is_allocated(ip);
                if free && !pool.is_closed() && allocator.take(*ip) {
                    records.set(*ip, record);
                    OpResult::Restamped(true)
                } else {
                    OpResult::Restamped(false)
                }
            }
        },
        PoolOp::Release { matcher } => release(records, allocator, matcher),
        PoolOp::Detach { matcher } if pool.metadata.is_terminating() => {
            release(records, allocator, matcher)
        }
        PoolOp::Detach { matcher } => {
            let kept = records.matching(matcher);
            for ip in &kept {
                let held = records.get(ip).expect("a matching IP has a record");
                if held.container_id.is_some() || held.netns.is_some() {
                    let detached = IpRecord {
                        container_id: None,
                        netns: None,
                        ..held.clone()
                    };
                    records.set(*ip, &detached);
                }
            }
            OpResult::Detached(kept)
        }
    }
}
