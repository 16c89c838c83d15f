//! Subnet claims, and the finalizers that wait for them.
//!
//! A pool's IPs are claimed in its SpiderSubnet (`status.controlledIPPools`) before the pool
//! gets them, and the claim is trimmed only after the pool gave them back. A pool goes (its
//! finalizer dropped) only when no record is left, and only then is its claim released; a
//! subnet goes when no pool claims any of its IPs.

use super::Engine;
use super::config::now_rfc3339;
use super::modify::{Change, Part};
use crate::error::Error;
use crate::meta::{Kind, Object, ObjectKey};
use crate::pool::SpiderIPPool;
use crate::range::IpSet;
use crate::store::{Deleted, Store, TypedStore};
use crate::subnet::SpiderSubnet;
use crate::workload::AppRef;

impl<S: Store> Engine<S> {
    /// Removes a terminating pool that holds no IP, then its subnet claim.
    pub(crate) async fn finish_pool(&self, name: &str) -> Result<(), Error> {
        let finished = self
            .modify(None, name, Part::Spec, |pool: &mut SpiderIPPool| {
                if !pool.metadata.is_terminating() || pool.allocated_count() > 0 {
                    return Ok(Change::Keep(None));
                }
                pool.metadata.finalizers.clear();
                let subnet = pool.metadata.label(crate::LABEL_OWNER_SUBNET);
                Ok(Change::Write(subnet.map(str::to_string)))
            })
            .await?;
        self.forget_allocator(name);
        if let Some((_, Some(subnet))) = finished {
            self.drop_claim(&subnet, name).await?;
        }
        Ok(())
    }

    /// Removes a terminating subnet that no pool holds IPs of.
    pub(crate) async fn finish_subnet(&self, name: &str) -> Result<(), Error> {
        self.modify(None, name, Part::Spec, |subnet: &mut SpiderSubnet| {
            if !subnet.metadata.is_terminating() || !subnet.claims().is_empty() {
                return Ok(Change::Keep(()));
            }
            subnet.metadata.finalizers.clear();
            Ok(Change::Write(()))
        })
        .await?;
        Ok(())
    }

    /// Sets the claim of `pool` in `subnet` to `ips` (creating it), refusing IPs the subnet does
    /// not have or another pool holds.
    pub(crate) async fn set_claim(
        &self,
        subnet: &str,
        pool: &str,
        ips: IpSet,
        application: Option<AppRef>,
    ) -> Result<(), Error> {
        let (name, pool) = (subnet.to_string(), pool.to_string());
        let referrer = format!("SpiderIPPool {pool:?}");
        let claimed = self
            .modify(None, subnet, Part::Status, move |s: &mut SpiderSubnet| {
                let mut claims = s.claims();
                let held = claims.get(&pool).map(|c| c.ips.clone()).unwrap_or_default();
                let more = ips.difference(&held);
                if s.metadata.is_terminating() && !more.is_empty() {
                    return Err(Error::Terminating {
                        key: s.key(),
                        refused: format!("new claims: SpiderIPPool {pool:?} asked for {more}"),
                    });
                }
                let missing = ips.difference(&s.usable_ips());
                if !missing.is_empty() {
                    return Err(Error::invalid(
                        Kind::SpiderIPPool,
                        &pool,
                        crate::error::Problem::NotInSubnet {
                            subnet: name.clone(),
                            ips: missing,
                        },
                    ));
                }
                for (other, c) in &claims {
                    let held = c.ips.intersection(&ips);
                    if other != &pool && !held.is_empty() {
                        return Err(Error::invalid(
                            Kind::SpiderIPPool,
                            &pool,
                            crate::error::Problem::HeldByPool {
                                subnet: name.clone(),
                                other: other.clone(),
                                ips: held,
                            },
                        ));
                    }
                }
                let application = application
                    .clone()
                    .or_else(|| claims.get(&pool).and_then(|c| c.application.clone()));
                let entry = crate::subnet::PoolClaim {
                    ips: ips.clone(),
                    application,
                    claimed_at: Some(now_rfc3339()),
                };
                if claims
                    .get(&pool)
                    .is_some_and(|c| c.ips == entry.ips && c.application == entry.application)
                {
                    return Ok(Change::Keep(()));
                }
                claims.insert(pool.clone(), entry);
                s.set_claims(claims);
                Ok(Change::Write(()))
            })
            .await?;
        match claimed {
            Some(_) => Ok(()),
            None => Err(Error::UnknownReference {
                kind: Kind::SpiderSubnet,
                name: subnet.into(),
                referrer,
            }),
        }
    }

    /// Removes the claim of `pool` from `subnet` (and the subnet, if it is terminating and now
    /// holds nothing).
    pub(crate) async fn drop_claim(&self, subnet: &str, pool: &str) -> Result<(), Error> {
        let pool = pool.to_string();
        self.modify(None, subnet, Part::Status, move |s: &mut SpiderSubnet| {
            let mut claims = s.claims();
            if claims.remove(&pool).is_none() {
                return Ok(Change::Keep(()));
            }
            s.set_claims(claims);
            Ok(Change::Write(()))
        })
        .await?;
        self.finish_subnet(subnet).await
    }

    /// Marks a pool terminating and removes it if it holds no IP.
    pub(crate) async fn delete_pool(&self, name: &str) -> Result<(), Error> {
        match self
            .store
            .delete(&ObjectKey::cluster(Kind::SpiderIPPool, name), None)
            .await
        {
            Ok(Deleted::Terminating(_)) => self.finish_pool(name).await,
            Ok(Deleted::Gone) => {
                // A pool without finalizer (not written by Berth): release its claim.
                let subnets: Vec<SpiderSubnet> = self.store.list_as(None).await?;
                for s in subnets {
                    if s.claims().contains_key(name) {
                        self.drop_claim(&s.metadata.name, name).await?;
                    }
                }
                Ok(())
            }
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
