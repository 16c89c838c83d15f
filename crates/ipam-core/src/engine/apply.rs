//! The `kubectl`-like front door: apply, scale and delete objects, after Spiderpool's mutating
//! and validating webhooks.
//!
//! An apply is not a change of the stored object but its replacement by the one given, checked
//! against every subnet and pool read in the same attempt; so each apply step re-runs whole on
//! a conflict ([`Engine::retry`]), and steps that touch several objects (a pool and its subnet
//! claim) write them in the order the crash rules of the engine ask for.

use serde_json::Value;

use super::Engine;
use super::modify::{Change, Part};
use crate::error::Error;
use crate::meta::{Kind, Object, ObjectKey};
use crate::pool::SpiderIPPool;
use crate::reserved::SpiderReservedIP;
use crate::store::{Store, TypedStore, decode};
use crate::subnet::SpiderSubnet;
use crate::workload::{AppRef, Deployment, StatefulSet, Workload, WorkloadKind};

/// Any object `berth apply` takes.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyObject {
    /// A SpiderSubnet.
    Subnet(SpiderSubnet),
    /// A SpiderIPPool.
    Pool(SpiderIPPool),
    /// A SpiderReservedIP.
    ReservedIp(SpiderReservedIP),
    /// An apps/v1 Deployment.
    Deployment(Deployment),
    /// An apps/v1 StatefulSet.
    StatefulSet(StatefulSet),
}

impl AnyObject {
    /// Reads a document by its `kind` (and `apiVersion`).
    pub fn from_value(v: Value) -> Result<Self, Error> {
        let kind_str = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api = v
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind_str && k != &Kind::SpiderEndpoint)
            .ok_or_else(|| Error::Malformed {
                kind: Kind::SpiderIPPool,
                name: name.clone(),
                reason: format!(
                    "kind {kind_str:?} cannot be applied; expected SpiderSubnet, SpiderIPPool, \
                     SpiderReservedIP, Deployment or StatefulSet"
                ),
            })?;
        if api != kind.api_version() {
            return Err(Error::Malformed {
                kind,
                name,
                reason: format!("apiVersion {api:?} is not {}", kind.api_version()),
            });
        }
        Ok(match kind {
            Kind::SpiderSubnet => AnyObject::Subnet(decode(v)?),
            Kind::SpiderIPPool => AnyObject::Pool(decode(v)?),
            Kind::SpiderReservedIP => AnyObject::ReservedIp(decode(v)?),
            Kind::Deployment => AnyObject::Deployment(decode(v)?),
            Kind::StatefulSet => AnyObject::StatefulSet(decode(v)?),
            Kind::SpiderEndpoint => unreachable!("filtered above"),
        })
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        match self {
            AnyObject::Subnet(o) => o.key(),
            AnyObject::Pool(o) => o.key(),
            AnyObject::ReservedIp(o) => o.key(),
            AnyObject::Deployment(o) => o.key(),
            AnyObject::StatefulSet(o) => o.key(),
        }
    }
}

macro_rules! any_object_from {
    ($($variant:ident($t:ty)),* $(,)?) => {$(
        impl From<$t> for AnyObject {
            fn from(object: $t) -> Self {
                AnyObject::$variant(object)
            }
        }
    )*};
}

any_object_from!(
    Subnet(SpiderSubnet),
    Pool(SpiderIPPool),
    ReservedIp(SpiderReservedIP),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
);

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The object did not exist.
    Created,
    /// The object changed.
    Configured,
    /// The object was already as given.
    Unchanged,
}

impl<S: Store> Engine<S> {
    /// Creates `object` and writes its status too (stores with a status subresource ignore the
    /// status of a create).
    pub(crate) async fn create_with_status<T: Object>(&self, object: &T) -> Result<T, Error> {
        let created = self.store.create_as(object).await;
        // Whatever the answer: a create whose answer was lost may have happened.
        self.pool_written(T::KIND, &object.meta().name);
        let created = created?;
        let wanted = crate::store::encode(object)?;
        let got = crate::store::encode(&created)?;
        if wanted.get("status") != got.get("status") && T::KIND.has_status_subresource() {
            let mut with_status: Value = got;
            match wanted.get("status") {
                Some(s) => with_status["status"] = s.clone(),
                None => {
                    if let Some(o) = with_status.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            let written = self.store.update_status(T::KIND, with_status).await;
            self.pool_written(T::KIND, &created.meta().name);
            return decode(written?);
        }
        Ok(created)
    }

    /// Creates or updates (spec and status) `object` given the stored one.
    pub(crate) async fn write<T: Object + PartialEq>(
        &self,
        stored: Option<&T>,
        object: &T,
    ) -> Result<(T, Applied), Error> {
        let Some(stored) = stored else {
            return Ok((self.create_with_status(object).await?, Applied::Created));
        };
        let mut obj = object.clone();
        obj.meta_mut().resource_version = stored.meta().resource_version.clone();
        obj.meta_mut().uid = stored.meta().uid.clone();
        obj.meta_mut().creation_timestamp = stored.meta().creation_timestamp.clone();
        obj.meta_mut().generation = stored.meta().generation;
        if &obj == stored {
            return Ok((stored.clone(), Applied::Unchanged));
        }
        let before = crate::store::encode(stored)?;
        let after = crate::store::encode(&obj)?;
        let mut result = stored.clone();
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            v
        };
        let written = async {
            if strip(&before) != strip(&after) || !T::KIND.has_status_subresource() {
                result = self.store.update_as(&obj).await?;
            }
            if T::KIND.has_status_subresource() && before.get("status") != after.get("status") {
                obj.meta_mut().resource_version = result.meta().resource_version.clone();
                result = self.store.update_status_as(&obj).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        self.pool_written(T::KIND, &object.meta().name);
        written?;
        Ok((result, Applied::Configured))
    }

    /// Creates or updates an object as `kubectl apply` would, after Spiderpool's mutating and
    /// validating webhooks. A Deployment or StatefulSet is recorded and its auto pools are
    /// reconciled at once; growth the subnets cannot satisfy is refused before anything is
    /// written.
    pub async fn apply(&self, object: impl Into<AnyObject>) -> Result<Applied, Error> {
        let _guard = self.spec_lock.write().await;
        match object.into() {
            AnyObject::Subnet(s) => self.apply_subnet(s).await,
            AnyObject::Pool(p) => self.apply_pool(p).await,
            AnyObject::ReservedIp(r) => self.apply_reserved(r).await,
            AnyObject::Deployment(d) => self.apply_workload(WorkloadKind::Deployment, d.0).await,
            AnyObject::StatefulSet(s) => self.apply_workload(WorkloadKind::StatefulSet, s.0).await,
        }
    }

    /// What Spiderpool's mutating and validating webhooks make of `object`, replacing `old`
    /// (`None` on create), checked against the subnets and pools the store holds: the object
    /// as [`Engine::apply`] would write it, or the error `apply` would give. Nothing is
    /// written. This is what `berth webhook` answers the API server, so a cluster and
    /// `berth apply` accept and refuse the same objects.
    ///
    /// Subnets, pools and reserved IPs only: `Error::Malformed` for other kinds, and when `old`
    /// is of another kind than `object`.
    pub async fn admit(
        &self,
        object: AnyObject,
        old: Option<AnyObject>,
    ) -> Result<AnyObject, Error> {
        let wrong_old = |o: &AnyObject| Error::Malformed {
            kind: o.key().kind,
            name: o.key().name,
            reason: "the old object is of another kind than the new one".into(),
        };
        // The API server sends whole objects: their finalizers are as their writer set them
        // (Berth itself removes its finalizer to let a pool or subnet go), and only a live
        // object gets the finalizer added. A replaced (PUT) object reaches admission before
        // the server copies `deletionTimestamp` over from the stored one, so whether it is
        // terminating is read from the old object too. `apply` instead keeps the stored finalizers, which
        // a manifest does not carry.
        let as_written = |mut meta_finalizers: Vec<String>, terminating: bool| {
            if !terminating && !meta_finalizers.iter().any(|f| f == crate::FINALIZER) {
                meta_finalizers.push(crate::FINALIZER.into());
            }
            meta_finalizers
        };
        Ok(match (object, old) {
            (AnyObject::Subnet(s), old) => {
                let old = match old {
                    None => None,
                    Some(AnyObject::Subnet(o)) => Some(o),
                    Some(other) => return Err(wrong_old(&other)),
                };
                let given = s.metadata.finalizers.clone();
                let terminating = s.metadata.is_terminating()
                    || old.as_ref().is_some_and(|o| o.metadata.is_terminating());
                let mut admitted = self.admit_subnet(s, old.as_ref()).await?;
                admitted.metadata.finalizers = as_written(given, terminating);
                AnyObject::Subnet(admitted)
            }
            (AnyObject::Pool(p), old) => {
                let old = match old {
                    None => None,
                    Some(AnyObject::Pool(o)) => Some(o),
                    Some(other) => return Err(wrong_old(&other)),
                };
                let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
                let given = p.metadata.finalizers.clone();
                let terminating = p.metadata.is_terminating()
                    || old.as_ref().is_some_and(|o| o.metadata.is_terminating());
                let mut admitted = self.admit_pool(p, old.as_ref(), &subnets).await?;
                admitted.metadata.finalizers = as_written(given, terminating);
                AnyObject::Pool(admitted)
            }
            (AnyObject::ReservedIp(r), None) => AnyObject::ReservedIp(admit_reserved(r, None)?),
            (AnyObject::ReservedIp(r), Some(AnyObject::ReservedIp(o))) => {
                AnyObject::ReservedIp(admit_reserved(r, Some(&o))?)
            }
            (object @ AnyObject::ReservedIp(_), Some(_)) => {
                return Err(wrong_old(&object));
            }
            (object, _) => {
                let key = object.key();
                return Err(Error::Malformed {
                    kind: key.kind,
                    name: key.name,
                    reason: "only SpiderSubnets, SpiderIPPools and SpiderReservedIPs are \
                             admitted; workloads are read, not admitted"
                        .into(),
                });
            }
        })
    }

    /// A subnet as the webhooks leave it, replacing `old`.
    async fn admit_subnet(
        &self,
        subnet: SpiderSubnet,
        old: Option<&SpiderSubnet>,
    ) -> Result<SpiderSubnet, Error> {
        let mut new = subnet;
        new.status = old.and_then(|o| o.status.clone());
        new.mutate();
        let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        new.validate(old, &subnets, &pools)?;
        Ok(new)
    }

    /// A pool as the webhooks leave it, replacing `old`, bound to its subnet among `subnets`.
    ///
    /// It is checked against every other pool. A pool that takes IPs it did not have (a new
    /// one, or new IPs or subnet) is checked against [`Store::list_current`]: a listing served
    /// from a watch may lack a pool created a moment before, and two overlapping pools applied
    /// together would then both be let in (Spiderpool's webhook, reading its informer cache,
    /// has that window). Auto pools are the exception, for the cost of a full listing on each
    /// of the many the controller makes: it carves their IPs under the subnet's claims, a
    /// compare-and-swap of the SpiderSubnet's status, which no two auto pools pass with one
    /// IP. A manual pool is claimed only once the controller sees it, so an auto pool carved
    /// within the watch's delay after it may still take its IPs; and `is_auto` is a label a
    /// user could set. Two admissions that run at once may also each miss the other's pool:
    /// this closes the window of pools written one after the other (one `kubectl apply`).
    async fn admit_pool(
        &self,
        pool: SpiderIPPool,
        old: Option<&SpiderIPPool>,
        subnets: &[SpiderSubnet],
    ) -> Result<SpiderIPPool, Error> {
        let mut new = pool;
        if let Some(old) = old {
            new.status = old.status.clone();
            // Keep the labels Berth put on auto pools unless the user sets them.
            for (k, v) in &old.metadata.labels {
                new.metadata
                    .labels
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            new.metadata.finalizers = old.metadata.finalizers.clone();
            new.metadata.deletion_timestamp = old.metadata.deletion_timestamp.clone();
        }
        new.mutate(subnets);
        let takes_ips = old.is_none_or(|o| {
            o.spec.subnet != new.spec.subnet
                || !new.usable_ips().difference(&o.usable_ips()).is_empty()
        });
        let pools: Vec<SpiderIPPool> = if takes_ips && !new.is_auto() {
            self.store.list_current_as().await?
        } else {
            self.store.list_as(None).await?
        };
        new.validate(old, &pools, subnets)?;
        Ok(new)
    }

    async fn apply_subnet(&self, subnet: SpiderSubnet) -> Result<Applied, Error> {
        let key = subnet.key();
        let name = subnet.metadata.name.clone();
        let applied = self
            .retry(&key, || async {
                let old: Option<SpiderSubnet> = self.store.get_as(None, &name).await?;
                let new = self.admit_subnet(subnet.clone(), old.as_ref()).await?;
                Ok(self.write(old.as_ref(), &new).await?.1)
            })
            .await?;
        // Pools created before their subnet are adopted: their IPs are claimed and counted.
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        for pool in pools {
            if pool.cidr() == subnet.spec.subnet.trunc() && !pool.is_auto() {
                let claimed = self
                    .store
                    .get_as::<SpiderSubnet>(None, &name)
                    .await?
                    .is_some_and(|s| s.claims().contains_key(&pool.metadata.name));
                if !claimed {
                    self.set_claim(&name, &pool.metadata.name, pool.usable_ips(), None)
                        .await?;
                    self.relabel_pool(&pool.metadata.name).await?;
                }
            }
        }
        Ok(applied)
    }

    /// Re-runs the pool's mutating step (owner subnet label, inherited gateway).
    async fn relabel_pool(&self, name: &str) -> Result<(), Error> {
        let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
        self.modify(None, name, Part::Spec, move |pool: &mut SpiderIPPool| {
            let before = pool.clone();
            pool.mutate(&subnets);
            Ok(if *pool == before {
                Change::Keep(())
            } else {
                Change::Write(())
            })
        })
        .await?;
        Ok(())
    }

    async fn apply_pool(&self, pool: SpiderIPPool) -> Result<Applied, Error> {
        let key = pool.key();
        let name = pool.metadata.name.clone();
        let applied = self
            .retry(&key, || async {
                let old: Option<SpiderIPPool> = self.store.get_as(None, &name).await?;
                let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
                let new = self
                    .admit_pool(pool.clone(), old.as_ref(), &subnets)
                    .await?;
                let owner = crate::pool::owning_subnet(&new.spec.subnet, &subnets)
                    .map(|s| s.metadata.name.clone());
                let before = old.as_ref().map(|o| o.usable_ips()).unwrap_or_default();
                let after = new.usable_ips();
                // Claim first (old and new IPs while the pool changes), write, then trim.
                if let Some(subnet) = &owner
                    && !new.is_auto()
                {
                    self.set_claim(subnet, &name, before.union(&after), None)
                        .await?;
                }
                let applied = self.write(old.as_ref(), &new).await?.1;
                if let Some(subnet) = &owner
                    && !new.is_auto()
                    && before != after
                {
                    self.set_claim(subnet, &name, after.clone(), None).await?;
                }
                self.forget_allocator(&name);
                Ok(applied)
            })
            .await?;
        Ok(applied)
    }

    async fn apply_reserved(&self, reserved: SpiderReservedIP) -> Result<Applied, Error> {
        let key = reserved.key();
        let name = reserved.metadata.name.clone();
        self.retry(&key, || async {
            let old: Option<SpiderReservedIP> = self.store.get_as(None, &name).await?;
            let new = admit_reserved(reserved.clone(), old.as_ref())?;
            Ok(self.write(old.as_ref(), &new).await?.1)
        })
        .await
    }

    async fn apply_workload(
        &self,
        kind: WorkloadKind,
        workload: Workload,
    ) -> Result<Applied, Error> {
        let mut w = workload;
        if w.metadata.namespace.is_none() {
            w.metadata.namespace = Some("default".into());
        }
        let app = AppRef::apps_v1(kind, w.namespace(), &w.metadata.name);
        let key = ObjectKey::namespaced(kind.kind(), w.namespace(), &w.metadata.name);
        let applied = self
            .retry(&key, || async {
                let old = self.workload(&app).await?;
                let mut new = w.clone();
                new.kind = kind.to_string();
                new.status = old.as_ref().and_then(|o| o.status.clone());
                // A workload applied without a uid (the seed's YAML) keeps the one it got first.
                if new.metadata.uid.is_none() {
                    new.metadata.uid = old
                        .as_ref()
                        .and_then(|o| o.metadata.uid.clone())
                        .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
                }
                if let Some(old) = &old
                    && old.metadata.uid != new.metadata.uid {
                        return Err(Error::Workload {
                            workload: app.to_string(),
                            reason: format!(
                                "metadata.uid {:?} differs from the recorded {:?}; delete it first to replace it",
                                new.metadata.uid, old.metadata.uid
                            ),
                        });
                    }
                self.check_app_fits(&new).await?;
                Ok(match kind {
                    WorkloadKind::Deployment => {
                        let old = old.map(Deployment);
                        self.write(old.as_ref(), &Deployment(new)).await?.1
                    }
                    WorkloadKind::StatefulSet => {
                        let old = old.map(StatefulSet);
                        self.write(old.as_ref(), &StatefulSet(new)).await?.1
                    }
                })
            })
            .await?;
        self.reconcile_app_locked(&app).await?;
        Ok(applied)
    }

    /// Sets the replica count of a Deployment or StatefulSet and resizes its auto pools. A
    /// count the subnets cannot serve is refused with the numbers and changes nothing.
    pub async fn scale(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        replicas: u32,
    ) -> Result<(), Error> {
        let _guard = self.spec_lock.write().await;
        let app = AppRef::apps_v1(kind, namespace, name);
        let Some(mut w) = self.workload(&app).await? else {
            return Err(Error::NotFound(ObjectKey::namespaced(
                kind.kind(),
                namespace,
                name,
            )));
        };
        w.spec.replicas = Some(i32::try_from(replicas).unwrap_or(i32::MAX));
        self.apply_workload(kind, w).await?;
        Ok(())
    }

    /// Deletes an object. Pools and subnets have finalizers: a pool holding IPs stays
    /// terminating (no new allocations) until the last is released, a subnet until its pools are
    /// gone. Deleting a Deployment or StatefulSet reclaims its auto pools (unless
    /// `ippool-reclaim: "false"`).
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), Error> {
        let _guard = self.spec_lock.write().await;
        match key.kind {
            Kind::SpiderIPPool => {
                let deleted = self.store.delete(key, None).await;
                self.pool_written(key.kind, &key.name);
                deleted?;
                self.finish_pool(&key.name).await
            }
            Kind::SpiderSubnet => {
                self.store.delete(key, None).await?;
                self.finish_subnet(&key.name).await
            }
            Kind::Deployment | Kind::StatefulSet => {
                let kind = if key.kind == Kind::Deployment {
                    WorkloadKind::Deployment
                } else {
                    WorkloadKind::StatefulSet
                };
                self.store.delete(key, None).await?;
                let ns = key.namespace.clone().unwrap_or_else(|| "default".into());
                self.reconcile_app_locked(&AppRef::apps_v1(kind, &ns, &key.name))
                    .await
            }
            Kind::SpiderEndpoint | Kind::SpiderReservedIP => {
                self.store.delete(key, None).await?;
                Ok(())
            }
        }
    }
}

/// A reserved-IP object as the webhooks leave it, replacing `old`.
fn admit_reserved(
    reserved: SpiderReservedIP,
    old: Option<&SpiderReservedIP>,
) -> Result<SpiderReservedIP, Error> {
    let mut new = reserved;
    new.mutate();
    new.validate(old)?;
    Ok(new)
}
