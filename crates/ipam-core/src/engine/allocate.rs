//! Allocate and release: all NICs and families of a request, all or nothing, idempotent per
//! container and interface; StatefulSet pods keep their IPs across restarts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::Engine;
use super::batch::{Matcher, OpResult, PoolOp};
use super::modify::{Change, Part};
use super::request::{
    AllocateRequest, AllocatedIp, Allocation, NicAddresses, NicRequest, PodContext, PoolIp,
    ReleaseRequest, Released,
};
use crate::addressing::Route;
use crate::annotations::PodAnnotations;
use crate::endpoint::{EndpointStatus, NicAllocation, PodAllocation, SpiderEndpoint};
use crate::error::Error;
use crate::meta::Kind;
use crate::pool::{IpRecord, SpiderIPPool};
use crate::range::IpFamily;
use crate::select::{find_auto_pool, select};
use crate::store::{Store, TypedStore, WatchEvent};
use crate::workload::{AppRef, StatefulSet, WorkloadKind};

struct Taken {
    pool: String,
    ip: IpAddr,
    fresh: bool,
    record: IpRecord,
}

/// `listed` and those of `extra` whose names it lacks.
fn with_pools(
    mut listed: Vec<Arc<SpiderIPPool>>,
    extra: &[Arc<SpiderIPPool>],
) -> Vec<Arc<SpiderIPPool>> {
    for p in extra {
        if !listed.iter().any(|q| q.metadata.name == p.metadata.name) {
            listed.push(p.clone());
        }
    }
    listed
}

pub(super) fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl<S: Store> Engine<S> {
    /// Whether the StatefulSet of `app` keeps the pod name `pod` at its replica count.
    pub(crate) async fn keeps(&self, app: Option<&AppRef>, pod: &str) -> Result<bool, Error> {
        let Some(app) = app.filter(|a| a.workload_kind() == Some(WorkloadKind::StatefulSet)) else {
            return Ok(false);
        };
        Ok(self
            .store
            .get_as::<StatefulSet>(Some(&app.namespace), &app.name)
            .await?
            .is_some_and(|s| s.keeps(pod)))
    }

    /// Allocates an IP per family to every NIC of the request, from the pools selection picks.
    ///
    /// All or nothing: when one NIC or family cannot be served, what this call took is released
    /// before the error returns. Repeating a request (same container and interfaces) returns the
    /// same IPs. A StatefulSet pod whose name its StatefulSet keeps gets the IPs it had.
    pub async fn allocate(&self, req: &AllocateRequest) -> Result<Allocation, Error> {
        let started = std::time::Instant::now();
        let mut result = self.allocate_now(req).await;
        // Where a controller sizes the auto pools, a pod of a scale-up can come before its
        // pool has grown, and a rolling update's new pod before the old pod's DEL: wait for
        // the pool to grow or give an IP back instead of failing.
        if let Some(limit) = self.config.auto_pool_wait {
            let deadline = tokio::time::Instant::now() + limit;
            while let Err(Error::PoolsExhausted { pools, .. }) = &result {
                tracing::debug!(pod = %req.pod.name, ?pools, "the pools are full: waiting for room");
                if !self.await_room(pools, deadline).await? {
                    break;
                }
                result = self.allocate_now(req).await;
            }
        }
        let ips = result
            .as_ref()
            .ok()
            .map(|a| a.nics.iter().map(|n| n.ips.len()).sum());
        self.stats.allocated(started.elapsed(), ips);
        result
    }

    async fn allocate_now(&self, req: &AllocateRequest) -> Result<Allocation, Error> {
        if req.container_id.is_empty() {
            return Err(Error::BadRequest {
                field: "containerID",
                reason: "the request has no container id".into(),
            });
        }
        let mut seen = Vec::new();
        for n in &req.nics {
            if seen.contains(&&n.interface) {
                return Err(Error::BadRequest {
                    field: "nics",
                    reason: format!("interface {} is requested twice", n.interface),
                });
            }
            seen.push(&n.interface);
        }
        let mut ctx = req.pod.clone();
        if ctx.namespace.is_empty() {
            ctx.namespace = "default".into();
        }
        let _pod = self
            .pod_locks
            .lock(&pod_key(&ctx.namespace, &ctx.name))
            .await;
        if let (Some(app), None) = (&ctx.app, &ctx.app_uid) {
            ctx.app_uid = self.workload(app).await?.and_then(|w| w.metadata.uid);
        }
        let parsed = PodAnnotations::parse(&ctx.annotations)?;
        let endpoint: Option<SpiderEndpoint> =
            self.store.get_as(Some(&ctx.namespace), &ctx.name).await?;
        let retained = self.keeps(ctx.app.as_ref(), &ctx.name).await?;
        // Whether a record of this pod that names no container (reserved by the controller,
        // or Spiderpool's) is taken as it is, without a pool write. Never for a StatefulSet
        // pod: its records lose their container when its name keeps them past a DEL, and a
        // record without one is then what a scale-down frees (`Matcher::Detached`).
        let adopt =
            ctx.app.as_ref().and_then(AppRef::workload_kind) != Some(WorkloadKind::StatefulSet);
        // Pools the wait saw, which the engine's cache may not show yet.
        let awaited = self.ensure_auto_pools(&ctx, &parsed, &req.nics).await?;

        let mut taken: Vec<Taken> = Vec::new();
        let mut moved: Vec<(String, IpAddr)> = Vec::new();
        let mut out = Vec::new();
        let mut clean_gateways = Vec::new();
        let result: Result<(), Error> = async {
            for nic in &req.nics {
                let prior = endpoint
                    .as_ref()
                    .filter(|e| retained || e.current().uid == req.pod_uid)
                    .and_then(|e| e.nic(&nic.interface).cloned());
                // What each IP of this NIC will record as its holder.
                let record = IpRecord {
                    pod: pod_key(&ctx.namespace, &ctx.name),
                    pod_uid: req.pod_uid.clone(),
                    container_id: Some(req.container_id.clone()),
                    interface: Some(nic.interface.clone()),
                    network: nic.network.clone(),
                    netns: req.netns.clone(),
                };
                if let Some(clean_gateway) = self
                    .recorded(req, nic, &record, endpoint.as_ref(), adopt, &mut taken)
                    .await?
                {
                    clean_gateways.push((nic, clean_gateway));
                    continue;
                }
                // The listing goes before the pool writes, which can then take the cached pools
                // over instead of copying them (a copy costs as much as the pool holds records).
                let selection = select(
                    &ctx,
                    &parsed,
                    nic,
                    &with_pools(self.pools().await?, &awaited),
                )?;
                for (family, candidates) in &selection.families {
                    let t = self
                        .allocate_family(
                            adopt,
                            *family,
                            candidates,
                            prior.as_ref(),
                            record.clone(),
                            &mut moved,
                        )
                        .await?;
                    taken.push(t);
                }
                clean_gateways.push((nic, selection.clean_gateway));
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.rollback(&taken).await;
            return Err(e);
        }

        for (nic, clean_gateway) in clean_gateways {
            out.push(
                self.nic_addresses(nic, clean_gateway, &taken, &parsed)
                    .await?,
            );
        }
        if let Err(e) = self.record_endpoint(&ctx, req, retained, &out).await {
            self.rollback(&taken).await;
            return Err(e);
        }
        // The pod's pools changed since its IPs were recorded: the old ones go.
        for (pool, ip) in moved {
            let pod = pod_key(&ctx.namespace, &ctx.name);
            self.pool_op(
                &pool,
                PoolOp::Release {
                    matcher: Matcher::Ip { ip, pod },
                },
            )
            .await?;
            self.after_release(&pool).await?;
        }
        Ok(Allocation { nics: out })
    }

    /// One address of one family for one NIC (`record`'s interface): the recorded one of a
    /// returning pod if its pool is still a candidate, else the first candidate pool with a
    /// free IP. `adopt`: see [`PoolOp::Allocate`].
    async fn allocate_family(
        &self,
        adopt: bool,
        family: IpFamily,
        candidates: &[String],
        prior: Option<&NicAllocation>,
        record: IpRecord,
        moved: &mut Vec<(String, IpAddr)>,
    ) -> Result<Taken, Error> {
        if let (Some(addr), Some(pool)) = (
            prior.and_then(|p| p.address(family)),
            prior.and_then(|p| p.pool(family)),
        ) {
            if candidates.iter().any(|c| c == pool) {
                if let Some(t) = self.restamp(pool, addr.addr(), &record, adopt).await? {
                    return Ok(t);
                }
            } else {
                moved.push((pool.to_string(), addr.addr()));
            }
        }
        let mut refusals = Vec::new();
        for pool in candidates {
            match self
                .pool_op(
                    pool,
                    PoolOp::Allocate {
                        record: record.clone(),
                        adopt,
                    },
                )
                .await?
            {
                OpResult::Allocated { ip, fresh } => {
                    return Ok(Taken {
                        pool: pool.clone(),
                        ip,
                        fresh,
                        record,
                    });
                }
                OpResult::Exhausted => refusals.push((pool.clone(), "exhausted")),
                OpResult::Closed(why) => refusals.push((pool.clone(), why)),
                OpResult::Missing => refusals.push((pool.clone(), "deleted")),
                other => unreachable!("allocate answered {other:?}"),
            }
        }
        let nic = record.interface.clone().unwrap_or_default();
        if refusals.iter().all(|(_, why)| *why == "exhausted") {
            return Err(Error::PoolsExhausted {
                nic: nic.clone(),
                family,
                pools: candidates.to_vec(),
            });
        }
        Err(Error::NoPool {
            nic,
            family,
            reason: refusals
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// A retried ADD of the same container and interface gets what it has, whatever selection
    /// would say now (the application may have changed since): the recorded IPs, confirmed in
    /// their pools. So does the ADD of a NIC that an earlier ADD of the same container
    /// allocated ahead. Returns the NIC's `clean_gateway` (the request's, else the recorded
    /// one) when it does.
    async fn recorded(
        &self,
        req: &AllocateRequest,
        nic: &NicRequest,
        record: &IpRecord,
        endpoint: Option<&SpiderEndpoint>,
        adopt: bool,
        taken: &mut Vec<Taken>,
    ) -> Result<Option<bool>, Error> {
        let Some(ep) = endpoint else { return Ok(None) };
        let current = ep.current();
        if current.container_id.as_deref() != Some(req.container_id.as_str()) {
            return Ok(None);
        }
        let Some(entry) = ep.nic(&nic.interface) else {
            return Ok(None);
        };
        let mut mine = Vec::new();
        for family in IpFamily::BOTH {
            let (Some(addr), Some(pool)) = (entry.address(family), entry.pool(family)) else {
                continue;
            };
            match self.restamp(pool, addr.addr(), record, adopt).await? {
                Some(t) => mine.push(t),
                None => return Ok(None),
            }
        }
        if mine.is_empty() {
            return Ok(None);
        }
        taken.extend(mine);
        // The NIC's own configuration says whether it has a default route; a NIC allocated
        // ahead by another NIC's ADD took that one's.
        Ok(Some(
            nic.clean_gateway.or(entry.clean_gateway).unwrap_or(false),
        ))
    }

    /// Gives `ip` of `pool` back to the pod `record` names, now held by `record` (or as it
    /// is, where `adopt` takes it so); `None` when the pool holds it for another pod (see
    /// [`PoolOp::Restamp`]).
    async fn restamp(
        &self,
        pool: &str,
        ip: IpAddr,
        record: &IpRecord,
        adopt: bool,
    ) -> Result<Option<Taken>, Error> {
        let op = PoolOp::Restamp {
            ip,
            record: record.clone(),
            adopt,
        };
        let restamped = self.pool_op(pool, op).await? == OpResult::Restamped(true);
        Ok(restamped.then(|| Taken {
            pool: pool.to_string(),
            ip,
            fresh: false,
            record: record.clone(),
        }))
    }

    /// Releases what this call took fresh, then lets the pools shrink if they wait for it;
    /// errors are logged (GC frees what is left).
    async fn rollback(&self, taken: &[Taken]) {
        let mut pools: Vec<&str> = Vec::new();
        for t in taken.iter().filter(|t| t.fresh) {
            let op = PoolOp::Release {
                matcher: Matcher::Exact {
                    ip: t.ip,
                    record: t.record.clone(),
                },
            };
            if let Err(e) = self.pool_op(&t.pool, op).await {
                tracing::warn!(pool = %t.pool, ip = %t.ip, error = %e, "rollback failed; GC will free the IP");
            }
            if !pools.contains(&t.pool.as_str()) {
                pools.push(&t.pool);
            }
        }
        for pool in pools {
            if let Err(e) = self.after_release(pool).await {
                tracing::warn!(%pool, error = %e, "resizing after a rollback failed; GC will retry");
            }
        }
    }

    async fn nic_addresses(
        &self,
        nic: &NicRequest,
        clean_gateway: bool,
        taken: &[Taken],
        parsed: &PodAnnotations,
    ) -> Result<NicAddresses, Error> {
        let mut ips = Vec::new();
        let mut routes: Vec<Route> = Vec::new();
        for t in taken
            .iter()
            .filter(|t| t.record.interface.as_deref() == Some(nic.interface.as_str()))
        {
            let Some(pool) = self.pool(&t.pool).await? else {
                continue;
            };
            let prefix = pool.spec.subnet.prefix_len();
            let address = IpNet::new(t.ip, prefix).expect("prefix of the pool's own subnet");
            for r in pool.spec.routes.iter().flatten() {
                if !routes.contains(r) {
                    routes.push(r.clone());
                }
            }
            let subnet = pool.spec.subnet.trunc();
            for r in &parsed.routes {
                if subnet.contains(&r.gw) && !routes.contains(r) {
                    routes.push(r.clone());
                }
            }
            ips.push(AllocatedIp {
                address,
                gateway: pool.spec.gateway,
                pool: t.pool.clone(),
            });
        }
        Ok(NicAddresses {
            interface: nic.interface.clone(),
            ips,
            routes,
            clean_gateway,
        })
    }

    /// Writes the pod's SpiderEndpoint after its IPs are recorded in the pools.
    async fn record_endpoint(
        &self,
        ctx: &PodContext,
        req: &AllocateRequest,
        retained: bool,
        nics: &[NicAddresses],
    ) -> Result<(), Error> {
        let pod_uid = req.pod_uid.clone();
        let container_id = req.container_id.clone();
        let node = ctx.node.clone();
        let nics = nics.to_vec();
        let (owner_type, owner_name) = match &ctx.app {
            Some(app) => (app.kind.to_string(), app.name.clone()),
            None => ("Pod".to_string(), ctx.name.clone()),
        };
        let new = SpiderEndpoint::new(&ctx.namespace, &ctx.name);
        self.modify_or_create(new, Part::Spec, move |ep: &mut SpiderEndpoint| {
            let stored = ep.clone();
            let mut current: PodAllocation = ep.current();
            if current.uid != pod_uid
                || current.container_id.as_deref() != Some(container_id.as_str())
            {
                // A new incarnation. The entries of NICs not in this request stay when they are
                // still the pod's: same pod (a new sandbox), or a StatefulSet pod whose IPs are
                // kept for its name and whose other NICs come back in their own calls.
                if current.uid != pod_uid && !retained {
                    current.ips.clear();
                }
                current.uid = pod_uid.clone();
                current.container_id = Some(container_id.clone());
            }
            current.node = node.clone();
            for n in &nics {
                let mut entry = NicAllocation {
                    interface: n.interface.clone(),
                    vlan: Some(0),
                    routes: n.routes.clone(),
                    clean_gateway: Some(n.clean_gateway),
                    ..Default::default()
                };
                for ip in &n.ips {
                    match IpFamily::of(&ip.address.addr()) {
                        IpFamily::V4 => {
                            entry.ipv4 = Some(ip.address);
                            entry.ipv4_pool = Some(ip.pool.clone());
                            entry.ipv4_gateway = ip.gateway;
                        }
                        IpFamily::V6 => {
                            entry.ipv6 = Some(ip.address);
                            entry.ipv6_pool = Some(ip.pool.clone());
                            entry.ipv6_gateway = ip.gateway;
                        }
                    }
                }
                current.ips.retain(|e| e.interface != n.interface);
                current.ips.push(entry);
            }
            current.ips.sort_by(|a, b| a.interface.cmp(&b.interface));
            ep.status = Some(EndpointStatus {
                current,
                owner_controller_type: owner_type.clone(),
                owner_controller_name: owner_name.clone(),
            });
            // A missing endpoint differs from the fresh one it starts as: it is created.
            Ok(if *ep == stored {
                Change::Keep(())
            } else {
                Change::Write(())
            })
        })
        .await?;
        Ok(())
    }

    /// Makes sure the application's auto pools for the requested NICs exist: creates them
    /// synchronously instead of making the pod wait for a controller, or, with
    /// [`EngineConfig::auto_pool_wait`](super::EngineConfig::auto_pool_wait), waits for the
    /// controller to.
    ///
    /// Returns the pools the wait saw (listed or read directly): the engine's cache, which
    /// selection reads, follows a watch of its own that may show them a moment later, and
    /// selection must see them now. (A pool the cache already holds stays in it: the cache
    /// mends listings that lag.)
    async fn ensure_auto_pools(
        &self,
        ctx: &PodContext,
        parsed: &PodAnnotations,
        nics: &[NicRequest],
    ) -> Result<Vec<Arc<SpiderIPPool>>, Error> {
        let Some(app) = &ctx.app else {
            return Ok(Vec::new());
        };
        // The auto pools the request needs: a NIC and family the subnets annotation names.
        let wanted: Vec<(&str, IpFamily)> = nics
            .iter()
            .filter_map(|n| Some((n.interface.as_str(), parsed.subnet_for(&n.interface)?)))
            .flat_map(|(nic, item)| {
                [(IpFamily::V4, &item.ipv4), (IpFamily::V6, &item.ipv6)]
                    .into_iter()
                    .filter(|(_, subnet)| subnet.is_some())
                    .map(move |(f, _)| (nic, f))
            })
            .collect();
        let missing = |pools: &[Arc<SpiderIPPool>]| {
            wanted
                .iter()
                .find(|(nic, f)| {
                    find_auto_pool(pools, app, ctx.app_uid.as_deref(), nic, *f).is_none()
                })
                .map(|(nic, f)| format!("{nic} {f}"))
        };
        if missing(&self.pools().await?).is_none() || self.workload(app).await?.is_none() {
            return Ok(Vec::new());
        }
        let Some(limit) = self.config.auto_pool_wait else {
            let _guard = self.spec_lock.write().await;
            self.reconcile_app_locked(app).await?;
            return Ok(Vec::new());
        };
        // The names the controller gives the pools it makes for this incarnation of the
        // application: only those are read when the watch shows a new pool. (Every waiting ADD
        // reading every new pool of the cluster made most of the API server's pool reads in
        // the 1,000-pod bench.) A pool of another name, say one adopted from a former
        // incarnation, shows in the listings made meanwhile.
        let expected: Option<Vec<String>> = ctx.app_uid.as_deref().map(|uid| {
            wanted
                .iter()
                .map(|(nic, f)| crate::autopool::auto_pool_name(*f, &app.name, nic, uid))
                .collect()
        });
        // Subscribe first, then look: a pool made in between is in the listing.
        let mut watch = self.store.watch(Kind::SpiderIPPool);
        let waiting = tokio::time::Instant::now();
        let deadline = waiting + limit;
        let mut pools = self.stored_pools().await?;
        let mut read: Vec<Arc<SpiderIPPool>> = Vec::new();
        loop {
            let seen = with_pools(pools.clone(), &read);
            let Some(nic) = missing(&seen) else {
                tracing::debug!(
                    pod = %ctx.name,
                    %app,
                    waited = ?waiting.elapsed(),
                    "waited for the auto pools"
                );
                // All of what it saw, not only what it read: the listing that showed the
                // pool may be ahead of the engine's cache, which selection reads.
                return Ok(seen);
            };
            // A listing may lag the watch (a store may serve it from a cache of its own): look
            // again every second too.
            let look_again = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            let event = tokio::time::timeout_at(
                deadline.min(look_again),
                futures::StreamExt::next(&mut watch),
            )
            .await;
            if event.is_err() && tokio::time::Instant::now() < deadline {
                pools = self.stored_pools().await?;
                continue;
            }
            match event {
                Ok(Some(WatchEvent::Changed { key, version })) => {
                    // A write to a pool already known (an allocation, a resize) makes no
                    // missing pool appear: only new names and deletions are read. (Every
                    // waiting ADD reading every changed pool cost 85 reads per pod in the
                    // 1,000-pod bench.)
                    let known = seen.iter().any(|p| p.metadata.name == key.name);
                    let awaited = expected.as_ref().is_none_or(|e| e.contains(&key.name));
                    if version.is_some() && (known || !awaited) {
                        continue;
                    }
                    pools.retain(|p| p.metadata.name != key.name);
                    read.retain(|p| p.metadata.name != key.name);
                    if version.is_some()
                        && let Some(pool) =
                            self.store.get_as::<SpiderIPPool>(None, &key.name).await?
                    {
                        read.push(Arc::new(pool));
                    }
                }
                Ok(Some(WatchEvent::Lost)) => pools = self.stored_pools().await?,
                Ok(None) | Err(_) => {
                    return Err(Error::unavailable(
                        format!("allocate for {}/{}", ctx.namespace, ctx.name),
                        format!(
                            "the auto pool of {app} for {nic} does not exist after {limit:?}; \
                             `berth controller` makes it: is it running?"
                        ),
                    ));
                }
            }
        }
    }

    /// Waits until one of `pools` that is an auto pool has changed (grown, or given an IP
    /// back), or `deadline`: whether to try again. `false` at once when none of them is an
    /// auto pool (a full manual pool: nobody makes room in it on the pod's behalf).
    async fn await_room(
        &self,
        pools: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<bool, Error> {
        // Subscribe first, then look: a change in between shows in what is read.
        let mut watch = self.store.watch(Kind::SpiderIPPool);
        let mut waiting = Vec::new();
        for name in pools {
            let Some(pool) = self.store.get_as::<SpiderIPPool>(None, name).await? else {
                continue;
            };
            // Room already (an IP came back since the allocation looked): try again now.
            if pool.allocated_count() < pool.usable_ips().len() as usize {
                return Ok(true);
            }
            if super::apps::app_of_pool(&pool).is_some() {
                waiting.push((name.clone(), pool.metadata.resource_version.clone()));
            }
        }
        if waiting.is_empty() {
            return Ok(false);
        }
        loop {
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut watch)).await {
                Ok(Some(WatchEvent::Changed { key, version })) => {
                    if waiting
                        .iter()
                        .any(|(name, seen)| *name == key.name && *seen != version)
                    {
                        return Ok(true);
                    }
                }
                Ok(Some(WatchEvent::Lost)) => return Ok(true),
                Ok(None) | Err(_) => return Ok(false),
            }
        }
    }

    /// Every pool as the store lists it (not the engine's cache, which follows a watch of its own).
    async fn stored_pools(&self) -> Result<Vec<Arc<SpiderIPPool>>, Error> {
        Ok(self
            .store
            .list_as::<SpiderIPPool>(None)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Releases what a container holds (CNI DEL). Unknown containers are a success. A
    /// StatefulSet pod whose name its StatefulSet keeps keeps its IPs, detached from the
    /// container, for its next incarnation.
    pub async fn release(&self, req: &ReleaseRequest) -> Result<Released, Error> {
        let released = self.release_now(req).await?;
        self.stats.released(released.ips.len());
        Ok(released)
    }

    async fn release_now(&self, req: &ReleaseRequest) -> Result<Released, Error> {
        let namespace = if req.namespace.is_empty() {
            "default"
        } else {
            req.namespace.as_str()
        };
        let _pod = self.pod_locks.lock(&pod_key(namespace, &req.name)).await;
        let endpoint: Option<SpiderEndpoint> =
            self.store.get_as(Some(namespace), &req.name).await?;
        let app = req.app.clone().or_else(|| {
            let st = endpoint.as_ref()?.status.as_ref()?;
            (st.owner_controller_type == "StatefulSet").then(|| {
                AppRef::apps_v1(
                    WorkloadKind::StatefulSet,
                    namespace,
                    &st.owner_controller_name,
                )
            })
        });
        let ours = endpoint.as_ref().is_some_and(|e| {
            e.current().container_id.as_deref() == Some(req.container_id.as_str())
        });
        // The pools to look in: those the endpoint names for this container, else all.
        let pool_names: Vec<String> = match (&endpoint, ours) {
            (Some(e), true) => {
                let mut v: Vec<String> = e
                    .current()
                    .ips
                    .iter()
                    .filter(|n| {
                        req.interfaces
                            .as_ref()
                            .is_none_or(|ifs| ifs.contains(&n.interface))
                    })
                    .flat_map(|n| [n.ipv4_pool.clone(), n.ipv6_pool.clone()])
                    .flatten()
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            _ => {
                let pools = self.pools().await?;
                pools
                    .iter()
                    .filter(|p| {
                        p.iter_records().any(|(_, r)| {
                            r.container_id.as_deref() == Some(req.container_id.as_str())
                        })
                    })
                    .map(|p| p.metadata.name.clone())
                    .collect()
            }
        };
        let mut out = Released::default();
        let mut freed_from = Vec::new();
        let keep = self.keeps(app.as_ref(), &req.name).await?;
        for pool in &pool_names {
            // The pod's records without a container (Spiderpool's, or reserved and adopted)
            // are this DEL's only when the endpoint names its container: a late DEL of an
            // old sandbox leaves them to the sandbox that runs now.
            let matcher = Matcher::Container {
                container_id: req.container_id.clone(),
                pod_uid: if ours {
                    req.pod_uid.clone()
                } else {
                    String::new()
                },
                interfaces: req.interfaces.clone(),
            };
            let op = if keep {
                PoolOp::Detach { matcher }
            } else {
                PoolOp::Release { matcher }
            };
            match self.pool_op(pool, op).await? {
                OpResult::Detached(ips) => {
                    out.kept_for_statefulset
                        .extend(ips.into_iter().map(|ip| PoolIp {
                            pool: pool.clone(),
                            ip,
                        }))
                }
                OpResult::Released(ips) => {
                    if !ips.is_empty() {
                        freed_from.push(pool);
                    }
                    out.ips.extend(ips.into_iter().map(|ip| PoolIp {
                        pool: pool.clone(),
                        ip,
                    }))
                }
                _ => {}
            }
        }
        // The endpoint stays only for IPs kept for the pod name (none are kept in a terminating
        // pool).
        if ours && out.kept_for_statefulset.is_empty() {
            self.forget_endpoint_nics(
                namespace,
                &req.name,
                &req.container_id,
                req.interfaces.as_deref(),
            )
            .await?;
        }
        // Pools that gave IPs back may now shrink or go.
        let gave_back: Vec<&String> = if keep {
            freed_from
        } else {
            pool_names.iter().collect()
        };
        for pool in gave_back {
            self.after_release(pool).await?;
        }
        Ok(out)
    }

    /// Removes a container's NIC entries from the pod's endpoint (and the endpoint when empty).
    async fn forget_endpoint_nics(
        &self,
        namespace: &str,
        name: &str,
        container_id: &str,
        interfaces: Option<&[String]>,
    ) -> Result<(), Error> {
        let container_id = container_id.to_string();
        let interfaces = interfaces.map(<[String]>::to_vec);
        self.modify(
            Some(namespace),
            name,
            Part::Spec,
            move |ep: &mut SpiderEndpoint| {
                let Some(st) = ep.status.as_mut() else {
                    return Ok(Change::Delete(()));
                };
                if st.current.container_id.as_deref() != Some(container_id.as_str()) {
                    return Ok(Change::Keep(()));
                }
                st.current.ips.retain(|n| {
                    interfaces
                        .as_ref()
                        .is_some_and(|ifs| !ifs.contains(&n.interface))
                });
                Ok(if st.current.ips.is_empty() {
                    Change::Delete(())
                } else {
                    Change::Write(())
                })
            },
        )
        .await?;
        Ok(())
    }

    /// After IPs left a pool: remove it if it is terminating and empty, shrink it if it is an
    /// auto pool above its desired size.
    pub(crate) async fn after_release(&self, pool: &str) -> Result<(), Error> {
        let Some(p) = self.pool(pool).await? else {
            return Ok(());
        };
        if p.metadata.is_terminating() {
            if p.allocated_count() == 0 {
                let _guard = self.spec_lock.write().await;
                self.finish_pool(pool).await?;
            }
            return Ok(());
        }
        // Shrinking is the controller's where it makes the pools (its GC reconciles).
        if self.config.auto_pool_wait.is_none()
            && let Some(app) = super::apps::app_of_pool(&p)
            && self.auto_pool_oversized(&p, &app).await?
        {
            let _guard = self.spec_lock.write().await;
            self.reconcile_app_locked(&app).await?;
        }
        Ok(())
    }

    /// Every record of the pools, keyed by pool name (for inspection and tests).
    pub async fn records(&self) -> Result<BTreeMap<String, BTreeMap<IpAddr, IpRecord>>, Error> {
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        Ok(pools
            .into_iter()
            .map(|p| (p.metadata.name.clone(), p.records()))
            .collect())
    }
}
