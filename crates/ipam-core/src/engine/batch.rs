//! Group commit of pool writes.
//!
//! Every change of IP ownership is a write of the pool's status with the pool's version as
//! precondition. Concurrent requests on one pool are merged: the first caller becomes the
//! leader, takes every operation queued for the pool, applies them all to one fresh read and
//! writes once. On a conflict the leader re-reads and re-applies the whole batch, since nothing
//! of it was written. Operations are intents ("an IP for this holder", "free what this container
//! holds"), so re-applying them to newer data is always right.
//!
//! If a leader is cancelled (its caller went away), the queue is dropped: the waiting callers
//! see their channel close and resubmit. An operation that was written before the cancellation
//! is found again by the resubmission, because allocation is idempotent per holder.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::Engine;
use crate::addressing::JsonString;
use crate::allocator::Allocator;
use crate::error::Error;
use crate::meta::{Kind, ObjectKey};
use crate::pool::{IpRecord, SpiderIPPool};
use crate::range::IpSet;
use crate::store::{RecordsDelta, Store};

/// What to do in one pool.
#[derive(Debug, Clone)]
pub(crate) enum PoolOp {
    /// Take an IP for `record`. Idempotent: an IP the pool already records for the same
    /// container and interface (or the same pod uid and interface) is returned instead.
    Allocate { record: IpRecord },
    /// Re-stamp `ip`, held by the pod name of `record`, with `record` (a StatefulSet pod came
    /// back under a new uid). Fails when the IP is not held by that pod name.
    Restamp { ip: IpAddr, record: IpRecord },
    /// Free the IPs whose record matches.
    Release { matcher: Matcher },
    /// Keep the IPs whose record matches for the pod name, detached from the container (a
    /// StatefulSet pod its StatefulSet keeps went away).
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
}

type Waiter = (PoolOp, oneshot::Sender<Result<OpResult, Error>>);

/// Per-pool queues and the cached allocator of each pool.
#[derive(Default)]
pub(crate) struct Batcher {
    queues: Mutex<HashMap<String, Vec<Waiter>>>,
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    version: String,
    reserved: IpSet,
    allocator: Allocator,
}

/// Drops the pool's queue if the leader is cancelled.
struct LeaderGuard<'a> {
    batcher: &'a Batcher,
    pool: String,
    done: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self
                .batcher
                .queues
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            q.remove(&self.pool);
        }
    }
}

impl<S: Store> Engine<S> {
    /// Runs `op` on `pool`, merged with concurrent operations on the same pool.
    pub(crate) async fn pool_op(&self, pool: &str, op: PoolOp) -> Result<OpResult, Error> {
        loop {
            let (tx, rx) = oneshot::channel();
            let leader = {
                let mut q = self
                    .batcher
                    .queues
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match q.get_mut(pool) {
                    Some(waiting) => {
                        waiting.push((op.clone(), tx));
                        false
                    }
                    None => {
                        q.insert(pool.to_string(), vec![(op.clone(), tx)]);
                        true
                    }
                }
            };
            if leader {
                self.lead(pool).await;
            }
            match rx.await {
                Ok(result) => return result,
                // The leader was cancelled before answering: submit again.
                Err(_) => continue,
            }
        }
    }

    async fn lead(&self, pool: &str) {
        let mut guard = LeaderGuard {
            batcher: &self.batcher,
            pool: pool.to_string(),
            done: false,
        };
        loop {
            let batch: Vec<Waiter> = {
                let mut q = self
                    .batcher
                    .queues
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let waiting = q.get_mut(pool).expect("the leader's queue exists");
                if waiting.is_empty() {
                    q.remove(pool);
                    guard.done = true;
                    return;
                }
                std::mem::take(waiting)
            };
            let ops: Vec<PoolOp> = batch.iter().map(|(op, _)| op.clone()).collect();
            let results = self.commit(pool, &ops).await;
            for ((_, tx), result) in batch.into_iter().zip(results) {
                // A caller that went away does not care.
                let _ = tx.send(result);
            }
        }
    }

    /// Applies `ops` to a fresh read of the pool and writes once, retrying on conflict.
    async fn commit(&self, name: &str, ops: &[PoolOp]) -> Vec<Result<OpResult, Error>> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        let mut attempt = 0;
        loop {
            let result = self.try_commit(name, ops).await;
            if let Err(Error::Conflict(_)) = &result {
                self.forget_pool(name);
            }
            match result {
                Err(Error::Conflict(_)) if attempt + 1 < self.config.max_retries => {
                    attempt += 1;
                    self.backoff(attempt).await;
                }
                Err(Error::Conflict(_)) => {
                    return ops
                        .iter()
                        .map(|_| {
                            Err(Error::RetriesExhausted {
                                key: key.clone(),
                                attempts: self.config.max_retries,
                            })
                        })
                        .collect();
                }
                Err(Error::NotFound(_)) => {
                    return ops.iter().map(|_| Ok(OpResult::Missing)).collect();
                }
                Err(e) => {
                    let msg = e.to_string();
                    return ops
                        .iter()
                        .map(|_| Err(Error::backend(format!("writing {key}"), msg.clone())))
                        .collect();
                }
                Ok(results) => return results,
            }
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
        let mut allocator = self.cached_allocator(name, &version, &reserved, &pool);
        let mut records = pool
            .status
            .as_mut()
            .and_then(|s| s.allocated_ips.take())
            .map(|r| r.0)
            .unwrap_or_default();
        let mut touched = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(Ok(apply(
                op,
                &pool,
                &mut records,
                &mut allocator,
                &mut touched,
            )));
        }
        if touched.is_empty() {
            if let Some(st) = pool.status.as_mut() {
                st.allocated_ips = (!records.is_empty()).then_some(JsonString(records));
            }
            self.return_pool(pool);
            self.store_allocator(name, version, reserved, allocator);
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
        self.store_allocator(name, version, reserved, allocator);
        Ok(results)
    }

    fn cached_allocator(
        &self,
        name: &str,
        version: &str,
        reserved: &IpSet,
        pool: &SpiderIPPool,
    ) -> Allocator {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.remove(name) {
            Some(c) if c.version == version && &c.reserved == reserved => c.allocator,
            _ => pool.allocator(reserved),
        }
    }

    fn store_allocator(&self, name: &str, version: String, reserved: IpSet, allocator: Allocator) {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            name.to_string(),
            Cached {
                version,
                reserved,
                allocator,
            },
        );
    }

    /// Forgets the cached allocator of a pool whose spec changed.
    pub(crate) fn forget_allocator(&self, name: &str) {
        let mut cache = self.batcher.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(name);
    }
}

fn apply(
    op: &PoolOp,
    pool: &SpiderIPPool,
    records: &mut BTreeMap<IpAddr, IpRecord>,
    allocator: &mut Allocator,
    touched: &mut Vec<IpAddr>,
) -> OpResult {
    match op {
        PoolOp::Allocate { record } => {
            let same_container = records.iter().find(|(_, r)| {
                r.container_id.is_some()
                    && r.container_id == record.container_id
                    && r.interface == record.interface
            });
            if let Some((ip, r)) = same_container {
                let ip = *ip;
                if r != record {
                    records.insert(ip, record.clone());
                    touched.push(ip);
                }
                return OpResult::Allocated { ip, fresh: false };
            }
            let same_pod = records.iter().find(|(_, r)| {
                !record.pod_uid.is_empty()
                    && r.pod_uid == record.pod_uid
                    && r.pod == record.pod
                    && r.interface == record.interface
            });
            if let Some((ip, _)) = same_pod {
                // The same pod with a new sandbox: it keeps its IP.
                let ip = *ip;
                records.insert(ip, record.clone());
                touched.push(ip);
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
                    records.insert(ip, record.clone());
                    touched.push(ip);
                    OpResult::Allocated { ip, fresh: true }
                }
                Err(_) => OpResult::Exhausted,
            }
        }
        PoolOp::Restamp { ip, record } => match records.get(ip) {
            Some(r) if r.pod == record.pod && r.interface == record.interface => {
                if r != record {
                    records.insert(*ip, record.clone());
                    touched.push(*ip);
                }
                OpResult::Restamped(true)
            }
            Some(_) => OpResult::Restamped(false),
            None => {
                // The record went (GC after a crash): take the IP back if it is free.
                let free = allocator.is_allocatable(ip) && !allocator.is_allocated(ip);
                if free && !pool.is_closed() && allocator.take(*ip) {
                    records.insert(*ip, record.clone());
                    touched.push(*ip);
                    OpResult::Restamped(true)
                } else {
                    OpResult::Restamped(false)
                }
            }
        },
        PoolOp::Release { matcher } => {
            let gone: Vec<IpAddr> = records
                .iter()
                .filter(|(ip, r)| matcher.matches(ip, r))
                .map(|(ip, _)| *ip)
                .collect();
            for ip in &gone {
                records.remove(ip);
                allocator.release(ip);
                touched.push(*ip);
            }
            OpResult::Released(gone)
        }
        PoolOp::Detach { matcher } => {
            let mut kept = Vec::new();
            for (ip, r) in records.iter_mut() {
                if matcher.matches(ip, r) {
                    kept.push(*ip);
                    if r.container_id.is_some() || r.netns.is_some() {
                        r.container_id = None;
                        r.netns = None;
                        touched.push(*ip);
                    }
                }
            }
            OpResult::Released(kept)
        }
    }
}
