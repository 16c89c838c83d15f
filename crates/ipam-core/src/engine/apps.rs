//! Application reconcile: create, grow, shrink and reclaim auto pools, and free the IPs a
//! StatefulSet no longer keeps.

use std::collections::BTreeMap;

use super::Engine;
use super::batch::{Matcher, PoolOp};
use crate::annotations::{PodAnnotations, SUBNETS};
use crate::autopool::{AutoPoolSpec, shrink_pick};
use crate::endpoint::SpiderEndpoint;
use crate::error::Error;
use crate::meta::{Kind, LabelSelector, Object, ObjectKey};
use crate::pool::SpiderIPPool;
use crate::range::IpFamily;
use crate::store::{Store, TypedStore};
use crate::subnet::SpiderSubnet;
use crate::workload::{AppKind, AppRef, StatefulSet, Workload, WorkloadKind};
use crate::{
    LABEL_INTERFACE, LABEL_IP_VERSION, LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APP_GV,
    LABEL_OWNER_APP_KIND, LABEL_OWNER_APP_NAME, LABEL_OWNER_APP_NAMESPACE, LABEL_OWNER_APP_UID,
    LABEL_OWNER_SUBNET,
};

/// The application an auto pool belongs to, from its labels.
pub(crate) fn app_of_pool(p: &SpiderIPPool) -> Option<AppRef> {
    let l = &p.metadata;
    let gv = l.label(LABEL_OWNER_APP_GV)?;
    let (group, version) = AppRef::parse_gv_label(gv);
    Some(AppRef {
        group,
        version,
        kind: AppKind::from(l.label(LABEL_OWNER_APP_KIND)?),
        namespace: l.label(LABEL_OWNER_APP_NAMESPACE)?.to_string(),
        name: l.label(LABEL_OWNER_APP_NAME)?.to_string(),
    })
}

fn reclaimable(p: &SpiderIPPool) -> bool {
    p.metadata.label(LABEL_IPPOOL_RECLAIM) != Some("false")
}

fn family_label(p: &SpiderIPPool) -> Option<IpFamily> {
    match p.metadata.label(LABEL_IP_VERSION)? {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

impl<S: Store> Engine<S> {
    /// The pools labelled as `app`'s (its kind, namespace and name: what [`app_of_pool`]
    /// reads), asked of the store with a label selector. A reconcile reads them, not every
    /// pool: on a cluster with hundreds of pools, whole listings made each auto pool's
    /// creation cost hundreds of milliseconds of the controller's time.
    async fn app_pools(&self, app: &AppRef) -> Result<Vec<SpiderIPPool>, Error> {
        let selector = LabelSelector {
            match_labels: [
                (LABEL_OWNER_APP_KIND, app.kind.to_string()),
                (LABEL_OWNER_APP_NAMESPACE, app.namespace.clone()),
                (LABEL_OWNER_APP_NAME, app.name.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        self.store.list_as(Some(&selector)).await
    }

    /// What auto pools a workload wants (none without a subnets annotation).
    pub(crate) fn auto_specs(&self, w: &Workload) -> Result<Vec<AutoPoolSpec>, Error> {
        let app = AppRef::of(w);
        let parsed = PodAnnotations::parse(w.pod_annotations()).map_err(|e| Error::Workload {
            workload: app.to_string(),
            reason: e.to_string(),
        })?;
        let Some(items) = &parsed.subnets else {
            return Ok(Vec::new());
        };
        let number = parsed.ip_number.unwrap_or(self.config.default_ip_number);
        let uid = w.metadata.uid.clone().unwrap_or_default();
        let mut specs = Vec::new();
        for item in items {
            for (family, subnet) in [(IpFamily::V4, &item.ipv4), (IpFamily::V6, &item.ipv6)] {
                let Some(subnet) = subnet else { continue };
                specs.push(AutoPoolSpec {
                    app: app.clone(),
                    app_uid: uid.clone(),
                    nic: item.interface.clone(),
                    family,
                    subnet: subnet.clone(),
                    number,
                    reclaim: parsed.reclaim.unwrap_or(true),
                    desired: number.desired(w.replicas()),
                });
            }
        }
        Ok(specs)
    }

    /// The existing pool a spec is served by: this incarnation's, or a retained one of a former
    /// incarnation (adopted).
    fn pool_for<'a>(pools: &'a [SpiderIPPool], spec: &AutoPoolSpec) -> Option<&'a SpiderIPPool> {
        let mine = |p: &&SpiderIPPool| {
            app_of_pool(p).as_ref() == Some(&spec.app)
                && p.metadata.label(LABEL_INTERFACE) == Some(spec.nic.as_str())
                && family_label(p) == Some(spec.family)
                && !p.metadata.is_terminating()
        };
        pools
            .iter()
            .filter(mine)
            .find(|p| p.metadata.label(LABEL_OWNER_APP_UID) == Some(spec.app_uid.as_str()))
            .or_else(|| pools.iter().filter(mine).find(|p| !reclaimable(p)))
    }

    /// Refuses a workload whose auto pools the subnets cannot grow to, before anything is written.
    pub(crate) async fn check_app_fits(&self, w: &Workload) -> Result<(), Error> {
        let specs = self.auto_specs(w)?;
        if specs.is_empty() {
            return Ok(());
        }
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        let reserved = self.reserved_ips().await?;
        let mut needs: BTreeMap<String, (u128, String)> = BTreeMap::new();
        for spec in &specs {
            let subnet: SpiderSubnet =
                self.store
                    .get_as(None, &spec.subnet)
                    .await?
                    .ok_or_else(|| Error::UnknownReference {
                        kind: Kind::SpiderSubnet,
                        name: spec.subnet.clone(),
                        referrer: format!("{} annotation {SUBNETS}", spec.app),
                    })?;
            if subnet.family() != spec.family {
                return Err(Error::Workload {
                    workload: spec.app.to_string(),
                    reason: format!(
                        "{SUBNETS} lists SpiderSubnet {:?} ({}) as {} of {}",
                        spec.subnet,
                        subnet.family(),
                        spec.family,
                        spec.nic
                    ),
                });
            }
            let have = match Self::pool_for(&pools, spec) {
                Some(p) => {
                    let owner = p.metadata.label(LABEL_OWNER_SUBNET).unwrap_or_default();
                    if owner != spec.subnet {
                        return Err(Error::Workload {
                            workload: spec.app.to_string(),
                            reason: format!(
                                "{} {} takes its IPs from pool {} of SpiderSubnet {owner:?}; moving it to {:?} is \
                                 not supported: delete the application first",
                                spec.nic, spec.family, p.metadata.name, spec.subnet
                            ),
                        });
                    }
                    p.spec.ips.len()
                }
                None => subnet.claims().get(&spec.name()).map_or(0, |c| c.ips.len()),
            };
            let need = (spec.desired as u128).saturating_sub(have);
            let e = needs.entry(spec.subnet.clone()).or_insert((0, spec.name()));
            e.0 += need;
        }
        for (subnet_name, (need, pool)) in needs {
            if need == 0 {
                continue;
            }
            let subnet: SpiderSubnet = self
                .store
                .get_as(None, &subnet_name)
                .await?
                .expect("checked above");
            if subnet.metadata.is_terminating() {
                return Err(Error::Terminating {
                    key: subnet.key(),
                    refused: format!("new claims: {pool} needs {need} more IPs"),
                });
            }
            let free = subnet.free_ips(&reserved).len();
            if free < need {
                return Err(Error::SubnetExhausted {
                    subnet: subnet_name,
                    pool,
                    free,
                    needed: need,
                });
            }
        }
        Ok(())
    }

    /// How many IPs an auto pool's application wants it to hold (`None`: the application is
    /// gone, or no longer names this NIC and family).
    pub(crate) async fn auto_pool_desired(
        &self,
        p: &SpiderIPPool,
        app: &AppRef,
    ) -> Result<Option<u128>, Error> {
        let Some(w) = self.workload(app).await? else {
            return Ok(None);
        };
        let specs = self.auto_specs(&w)?;
        Ok(specs
            .iter()
            .find(|s| {
                Some(s.nic.as_str()) == p.metadata.label(LABEL_INTERFACE)
                    && Some(s.family) == family_label(p)
            })
            .map(|spec| spec.desired as u128))
    }

    /// Whether an auto pool holds more IPs than its application wants (a shrink waited for
    /// pods to go).
    pub(crate) async fn auto_pool_oversized(
        &self,
        p: &SpiderIPPool,
        app: &AppRef,
    ) -> Result<bool, Error> {
        Ok(self
            .auto_pool_desired(p, app)
            .await?
            .is_some_and(|desired| p.spec.ips.len() > desired))
    }

    /// Brings the auto pools of `app` to what the application as stored wants: creates, grows
    /// or shrinks them, reclaims them once the application is gone (unless
    /// `ippool-reclaim: "false"`), and frees the IPs of StatefulSet ordinals scaled away.
    /// What a controller calls when an application changes, on stores whose applications are
    /// written by others (a cluster's Deployments and StatefulSets); `apply`, `scale` and
    /// `delete` do it themselves.
    ///
    /// Reconciles of different applications run side by side (a controller with many new
    /// Deployments makes their pools in parallel); those of one application take turns, and
    /// so does everything else that writes specs (apply, GC).
    pub async fn reconcile(&self, app: &AppRef) -> Result<(), Error> {
        let _shared = self.spec_lock.read().await;
        let _app = self.app_locks.lock(app).await;
        self.reconcile_app_locked(app).await
    }

    /// [`Engine::reconcile`] of every application the store knows of: its Deployments and
    /// StatefulSets, and the owners named by auto pools and StatefulSet endpoints (so the pools
    /// of an application deleted meanwhile are reclaimed). Those whose pools, as listed, are
    /// already what they want are skipped; the others are reconciled one by one, each under
    /// its own lock, so reconciles of applications that change meanwhile are not held up.
    ///
    /// A controller's GC runs this every minute and after pods go: one reconcile after
    /// another of every application cost a few requests each and, when it held the spec lock
    /// throughout, kept the pools of a burst of new Deployments waiting. Settled is judged by
    /// `app_settled`, from one listing of each kind.
    pub async fn reconcile_all(&self) -> Result<(), Error> {
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
        // The applications, with what the listings say of them: Some(workload) as stored,
        // None when it is to be read (an owner named by a pool or endpoint only).
        let mut apps: BTreeMap<AppRef, Option<Workload>> = BTreeMap::new();
        for p in &pools {
            if let Some(a) = app_of_pool(p) {
                apps.entry(a).or_default();
            }
        }
        for d in self
            .store
            .list_as::<crate::workload::Deployment>(None)
            .await?
        {
            apps.insert(AppRef::of(&d), Some(d.0));
        }
        for s in self.store.list_as::<StatefulSet>(None).await? {
            apps.insert(AppRef::of(&s), Some(s.0));
        }
        for e in self.store.list_as::<SpiderEndpoint>(None).await? {
            if let Some(st) = &e.status
                && st.owner_controller_type == "StatefulSet"
            {
                let ns = e.metadata.namespace.as_deref().unwrap_or("default");
                apps.entry(AppRef::apps_v1(
                    WorkloadKind::StatefulSet,
                    ns,
                    &st.owner_controller_name,
                ))
                .or_default();
            }
        }
        for (app, listed) in apps {
            let w = match listed {
                Some(w) => Some(w),
                None if app.workload_kind().is_some() => None,
                None => self.workload(&app).await?,
            };
            if self.app_settled(&app, w.as_ref(), &pools, &subnets) {
                continue;
            }
            self.reconcile(&app).await?;
        }
        Ok(())
    }

    /// Brings an application's auto pools to what it wants, reclaims the ones it no longer
    /// wants, and frees the IPs its StatefulSet no longer keeps. Caller holds the spec lock
    /// whole, or shared with the application's own lock.
    pub(crate) async fn reconcile_app_locked(&self, app: &AppRef) -> Result<(), Error> {
        let w = self.workload(app).await?;
        let specs = match &w {
            Some(w) => self.auto_specs(w)?,
            None => Vec::new(),
        };
        let pools = self.app_pools(app).await?;
        let wanted: Vec<String> = specs
            .iter()
            .filter_map(|s| Self::pool_for(&pools, s).map(|p| p.metadata.name.clone()))
            .collect();
        for p in pools
            .iter()
            .filter(|p| app_of_pool(p).as_ref() == Some(app))
        {
            if !wanted.contains(&p.metadata.name) && reclaimable(p) {
                // Deleted already: only its last IP's release (or GC) can finish it, and
                // another DELETE would be one more write to the API server per reconcile.
                if p.metadata.is_terminating() {
                    if p.allocated_count() == 0 {
                        self.finish_pool(&p.metadata.name).await?;
                    }
                } else {
                    self.delete_pool(&p.metadata.name).await?;
                }
            }
        }
        if app.workload_kind() == Some(WorkloadKind::StatefulSet) {
            self.free_unkept_statefulset_ips(app, w.clone().map(StatefulSet).as_ref())
                .await?;
        }
        for spec in &specs {
            self.ensure_auto_pool(spec).await?;
        }
        Ok(())
    }

    /// Whether a reconcile of `app` would change nothing, judged from listings of every pool
    /// and subnet and `w`, the application as stored (`None`: gone): each auto pool it wants
    /// exists with its labels, its size (or as small as its pods let it shrink) and its
    /// subnet claim, and no pool of it waits to be reclaimed or finished. StatefulSets are
    /// never settled: their endpoints, which a reconcile also frees, are not judged here.
    fn app_settled(
        &self,
        app: &AppRef,
        w: Option<&Workload>,
        pools: &[SpiderIPPool],
        subnets: &[SpiderSubnet],
    ) -> bool {
        if app.workload_kind() == Some(WorkloadKind::StatefulSet) {
            return false;
        }
        let specs = match w.map(|w| self.auto_specs(w)) {
            Some(Ok(specs)) => specs,
            // A reconcile reports the error.
            Some(Err(_)) => return false,
            None => Vec::new(),
        };
        let mut wanted = Vec::new();
        for spec in &specs {
            let Some(p) = Self::pool_for(pools, spec) else {
                return false;
            };
            let mut stamped = p.clone();
            spec.stamp(&mut stamped);
            let (have, desired) = (p.spec.ips.len(), spec.desired as u128);
            let sized =
                have == desired || (have > desired && shrink_pick(p, have - desired).is_empty());
            let claimed = subnets
                .iter()
                .find(|s| s.metadata.name == spec.subnet)
                .and_then(|s| s.claims().get(&p.metadata.name).map(|c| c.ips.clone()));
            if stamped != *p || !sized || claimed.as_ref() != Some(&p.spec.ips) {
                return false;
            }
            wanted.push(p.metadata.name.as_str());
        }
        !pools.iter().any(|p| {
            app_of_pool(p).as_ref() == Some(app)
                && !wanted.contains(&p.metadata.name.as_str())
                && reclaimable(p)
                && (!p.metadata.is_terminating() || p.allocated_count() == 0)
        })
    }

    /// Creates, grows or shrinks one auto pool. Subnet claim first when growing, pool first
    /// when shrinking.
    async fn ensure_auto_pool(&self, spec: &AutoPoolSpec) -> Result<(), Error> {
        let name = spec.name();
        let key = ObjectKey::cluster(Kind::SpiderIPPool, &name);
        let application = Some(spec.app.clone());
        self.retry(&key, || async {
            let subnet: SpiderSubnet =
                self.store
                    .get_as(None, &spec.subnet)
                    .await?
                    .ok_or_else(|| Error::UnknownReference {
                        kind: Kind::SpiderSubnet,
                        name: spec.subnet.clone(),
                        referrer: format!("{} annotation {SUBNETS}", spec.app),
                    })?;
            let pools = self.app_pools(&spec.app).await?;
            let reserved = self.reserved_ips().await?;
            let desired = spec.desired as u128;
            match Self::pool_for(&pools, spec) {
                None => {
                    let claimed = subnet
                        .claims()
                        .get(&name)
                        .map(|c| c.ips.clone())
                        .unwrap_or_default();
                    let carved = claimed.len() < desired;
                    let ips = if carved {
                        carve(&subnet, &reserved, &claimed, desired, spec, &name)?
                    } else {
                        claimed.first_n(desired)
                    };
                    if ips != claimed {
                        self.set_claim(&spec.subnet, &name, ips.clone(), application.clone())
                            .await
                            .map_err(|e| if carved { claim_raced(e, &key) } else { e })?;
                    }
                    let pool = spec.build(&subnet, ips.clone());
                    self.create_with_status(&pool).await?;
                    tracing::debug!(pool = %name, app = %spec.app, "auto pool created");
                    self.forget_allocator(&name);
                    // GC frees claims whose pool is missing after a grace period; if it did so
                    // while this call stalled, take the pool back before anyone uses it.
                    let now: Option<SpiderSubnet> = self.store.get_as(None, &spec.subnet).await?;
                    if now.is_none_or(|s| s.claims().get(&name).map(|c| &c.ips) != Some(&ips)) {
                        self.delete_pool(&name).await?;
                        return Err(Error::Conflict(key.clone()));
                    }
                    Ok(())
                }
                Some(p) => {
                    let pool_name = p.metadata.name.clone();
                    let mut new = p.clone();
                    spec.stamp(&mut new);
                    let have = p.spec.ips.len();
                    let claimed = subnet
                        .claims()
                        .get(&pool_name)
                        .map(|c| c.ips.clone())
                        .unwrap_or_default();
                    if have < desired {
                        // Grow: the claim (which may be ahead after a crash) first.
                        let base = claimed.union(&p.spec.ips);
                        let carved = base.len() < desired;
                        let target = if carved {
                            carve(&subnet, &reserved, &base, desired, spec, &pool_name)?
                        } else {
                            p.spec
                                .ips
                                .union(&base.difference(&p.spec.ips).first_n(desired - have))
                        };
                        if !target.is_subset(&claimed) {
                            self.set_claim(
                                &spec.subnet,
                                &pool_name,
                                claimed.union(&target),
                                application.clone(),
                            )
                            .await
                            .map_err(|e| if carved { claim_raced(e, &key) } else { e })?;
                        }
                        new.spec.ips = target;
                    } else if have > desired {
                        new.spec.ips = p.spec.ips.difference(&shrink_pick(p, have - desired));
                    }
                    if new != *p {
                        new.set_records(new.records());
                        self.write(Some(p), &new).await?;
                        self.forget_allocator(&pool_name);
                    }
                    if claimed != new.spec.ips {
                        self.set_claim(
                            &spec.subnet,
                            &pool_name,
                            new.spec.ips.clone(),
                            application.clone(),
                        )
                        .await?;
                    }
                    Ok(())
                }
            }
        })
        .await
    }

    /// Frees IPs kept for StatefulSet pods whose names the StatefulSet (scaled down or deleted)
    /// no longer keeps, and forgets their endpoints. IPs still held by a live container are left
    /// to that container's DEL.
    async fn free_unkept_statefulset_ips(
        &self,
        app: &AppRef,
        sts: Option<&StatefulSet>,
    ) -> Result<(), Error> {
        let endpoints: Vec<SpiderEndpoint> = self
            .store
            .list(Kind::SpiderEndpoint, Some(&app.namespace), None)
            .await?
            .into_iter()
            .map(crate::store::decode::<SpiderEndpoint>)
            .collect::<Result<_, _>>()?;
        for ep in endpoints {
            let Some(st) = &ep.status else { continue };
            if st.owner_controller_type != "StatefulSet" || st.owner_controller_name != app.name {
                continue;
            }
            if sts.is_some_and(|s| s.keeps(&ep.metadata.name)) {
                continue;
            }
            let pod = format!("{}/{}", app.namespace, ep.metadata.name);
            let mut still_held = false;
            for nic in &st.current.ips {
                for pool in [&nic.ipv4_pool, &nic.ipv6_pool].into_iter().flatten() {
                    let op = PoolOp::Release {
                        matcher: Matcher::Detached { pod: pod.clone() },
                    };
                    self.pool_op(pool, op).await?;
                    let p: Option<SpiderIPPool> = self.store.get_as(None, pool).await?;
                    if p.is_some_and(|p| p.iter_records().any(|(_, r)| r.pod == pod)) {
                        still_held = true;
                    }
                    if let Some(p) = self.store.get_as::<SpiderIPPool>(None, pool).await?
                        && p.metadata.is_terminating()
                        && p.allocated_count() == 0
                    {
                        self.finish_pool(pool).await?;
                    }
                }
            }
            if !still_held {
                match self.store.delete_as(&ep).await {
                    Ok(_) | Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// The refusal of a claim of carved IPs because another pool holds some, as the conflict it
/// is: [`carve`] takes only IPs the subnet showed free, so another reconcile (of another
/// application, running side by side) claimed them between this one's read of the subnet and
/// its write. The step then runs again on a fresh read and carves other IPs.
fn claim_raced(e: Error, key: &ObjectKey) -> Error {
    match e.problem() {
        Some(crate::error::Problem::HeldByPool { .. }) => Error::Conflict(key.clone()),
        _ => e,
    }
}

/// `held` grown to `desired` IPs with the lowest free IPs of `subnet`, or the subnet's
/// refusal with the numbers.
fn carve(
    subnet: &SpiderSubnet,
    reserved: &crate::range::IpSet,
    held: &crate::range::IpSet,
    desired: u128,
    spec: &AutoPoolSpec,
    pool: &str,
) -> Result<crate::range::IpSet, Error> {
    let free = subnet.free_ips(reserved);
    let need = desired - held.len();
    if free.len() < need {
        return Err(Error::SubnetExhausted {
            subnet: spec.subnet.clone(),
            pool: pool.to_string(),
            free: free.len(),
            needed: need,
        });
    }
    Ok(held.union(&free.first_n(need)))
}
