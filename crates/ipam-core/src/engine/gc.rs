//! Garbage collection: free what dead containers hold and repair what a crash left half-done.
//!
//! Every release is re-validated at the moment it is written: GC frees an IP only if the
//! pool's record of it is still exactly the one judged dead (same pod uid, container and
//! interface), under the pool's version. An IP re-used in the meantime has a different record
//! and is left alone, which is the ABA race behind Spiderpool's and whereabouts' duplicate IPs.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use super::Engine;
use super::batch::{Matcher, OpResult, PoolOp};
use super::modify::{Change, Part};
use crate::endpoint::SpiderEndpoint;
use crate::error::Error;
use crate::meta::Object;
use crate::pool::{IpRecord, SpiderIPPool};
use crate::store::{Store, TypedStore};
use crate::subnet::SpiderSubnet;
use crate::workload::{AppRef, WorkloadKind};

/// Tells whether the holder of an IP still exists.
///
/// Embedded mode asks whether the recorded netns path exists (and the last CNI GC of the
/// network listed the attachment); Kubernetes mode asks the API server about the pod uid.
#[async_trait]
pub trait Liveness: Send + Sync {
    /// `Ok(true)` if the holder is alive, `Ok(false)` if it is certainly gone. Errors keep the IP.
    async fn alive(&self, record: &IpRecord) -> Result<bool, Error>;
}

/// What a GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// IPs freed.
    pub released: Vec<GcReleased>,
    /// Endpoints removed (`ns/name`).
    pub endpoints_deleted: Vec<String>,
    /// Subnet claims of pools that do not exist, removed.
    pub claims_removed: Vec<ClaimRemoved>,
}

/// An IP GC freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcReleased {
    /// Its pool.
    pub pool: String,
    /// The address.
    pub ip: IpAddr,
    /// Who held it (`ns/pod`).
    pub holder: String,
}

/// A subnet claim GC removed because its pool does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRemoved {
    /// The subnet.
    pub subnet: String,
    /// The pool the claim was for.
    pub pool: String,
}

impl<S: Store> Engine<S> {
    /// One GC pass: reconcile every application (sizes, reclaim), free IPs whose holder is dead
    /// (except those kept for StatefulSet pods), drop endpoints nothing backs, finish
    /// terminating pools and subnets, and free subnet claims left by a crash.
    pub async fn gc(&self, liveness: &dyn Liveness) -> Result<GcReport, Error> {
        let report = self.gc_now(liveness).await?;
        self.stats.collected(report.released.len());
        Ok(report)
    }

    async fn gc_now(&self, liveness: &dyn Liveness) -> Result<GcReport, Error> {
        let mut report = GcReport::default();
        self.reconcile_all().await?;
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        for pool in &pools {
            for (ip, record) in pool.records() {
                // A record without a container is asked too: Spiderpool's records name none
                // (a cluster moved from it keeps them), nor do the IPs the controller reserves
                // for a pod before its ADD. (Embedded mode's liveness, the recorded netns,
                // finds none for it, nor for a record detached for a StatefulSet pod, which
                // `kept_for_statefulset` keeps.)
                let alive = match liveness.alive(&record).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(pool = %pool.metadata.name, %ip, error = %e, "liveness unknown; keeping");
                        true
                    }
                };
                // Asked only of the dead: it reads the holder's endpoint, and asking it of
                // every record made most of the controller's requests (a 1,000-pod run: some
                // 12,000 endpoint reads, a GC pass after each burst of deletions).
                if alive || self.kept_for_statefulset(&record).await? {
                    continue;
                }
                let op = PoolOp::Release {
                    matcher: Matcher::Exact {
                        ip,
                        record: record.clone(),
                    },
                };
                if let OpResult::Released(gone) = self.pool_op(&pool.metadata.name, op).await? {
                    for ip in gone {
                        report.released.push(GcReleased {
                            pool: pool.metadata.name.clone(),
                            ip,
                            holder: record.pod.clone(),
                        });
                    }
                }
            }
        }
        let mut touched: Vec<&str> = report.released.iter().map(|r| r.pool.as_str()).collect();
        touched.dedup();
        for pool in touched {
            self.after_release(pool).await?;
        }
        // Endpoints whose pods hold nothing any more. The endpoints are listed first: an ADD
        // writes its pool records before its endpoint, so every endpoint listed has its
        // records in the later listing of the pools, unless they were released since. (Pools
        // listed first would miss the records of an ADD whose endpoint the listing then shows,
        // and its endpoint would be deleted.)
        let endpoints: Vec<SpiderEndpoint> = self.store.list_as(None).await?;
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        for ep in endpoints {
            let ns = ep
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let pod = format!("{ns}/{}", ep.metadata.name);
            let held = pools
                .iter()
                .any(|p| p.iter_records().any(|(_, r)| r.pod == pod));
            if !held {
                match self.store.delete_as(&ep).await {
                    Ok(_) => report.endpoints_deleted.push(pod),
                    Err(Error::NotFound(_) | Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let _guard = self.spec_lock.write().await;
        for pool in &pools {
            if pool.metadata.is_terminating() && pool.allocated_count() == 0 {
                self.finish_pool(&pool.metadata.name).await?;
            }
        }
        self.repair_counts().await?;
        let pools: Vec<SpiderIPPool> = self.store.list_as(None).await?;
        let now = std::time::SystemTime::now();
        for subnet in self.store.list_as::<SpiderSubnet>(None).await? {
            for (pool, claim) in subnet.claims() {
                if pools.iter().any(|p| p.metadata.name == pool) {
                    continue;
                }
                let abandoned = match &claim.application {
                    // An auto pool's claim: abandoned if its application no longer wants a pool
                    // of that name (deleted, or re-created under another uid). The reconcile
                    // above re-created the pools the applications do want.
                    Some(app) => match self.workload(app).await? {
                        None => true,
                        Some(w) => !self.auto_specs(&w)?.iter().any(|s| s.name() == pool),
                    },
                    // A manual pool's claim: an apply may be between claiming and creating the
                    // pool, in this or another process; wait out the grace period.
                    None => {
                        let age = claim
                            .claimed_at
                            .as_deref()
                            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                            .and_then(|t| now.duration_since(t).ok())
                            .unwrap_or(Duration::MAX);
                        age >= self.config.claim_grace
                    }
                };
                if abandoned {
                    self.drop_claim(&subnet.metadata.name, &pool).await?;
                    report.claims_removed.push(ClaimRemoved {
                        subnet: subnet.metadata.name.clone(),
                        pool,
                    });
                }
            }
            self.finish_subnet(&subnet.metadata.name).await?;
        }
        Ok(report)
    }

    /// Recomputes the stored counts of pools and subnets (a crash between a spec write and the
    /// status write that follows it leaves them stale).
    async fn repair_counts(&self) -> Result<(), Error> {
        self.recount::<SpiderIPPool>(|p| p.set_records(p.records()))
            .await?;
        self.recount::<SpiderSubnet>(|s| s.set_claims(s.claims()))
            .await
    }

    /// Writes the status `fix` recomputes, for every object of `T` whose stored status differs.
    async fn recount<T: Object + PartialEq>(&self, fix: fn(&mut T)) -> Result<(), Error> {
        for stored in self.store.list_as::<T>(None).await? {
            let mut fixed = stored.clone();
            fix(&mut fixed);
            if fixed == stored {
                continue;
            }
            self.modify(None, stored.name(), Part::Status, move |o: &mut T| {
                let before = o.clone();
                fix(o);
                Ok(if *o == before {
                    Change::Keep(())
                } else {
                    Change::Write(())
                })
            })
            .await?;
        }
        Ok(())
    }

    /// Whether a record is kept for a StatefulSet pod its StatefulSet keeps.
    async fn kept_for_statefulset(&self, record: &IpRecord) -> Result<bool, Error> {
        let Some((ns, name)) = record.pod.split_once('/') else {
            return Ok(false);
        };
        let Some(ep) = self.store.get_as::<SpiderEndpoint>(Some(ns), name).await? else {
            return Ok(false);
        };
        let Some(st) = &ep.status else {
            return Ok(false);
        };
        if st.owner_controller_type != "StatefulSet" {
            return Ok(false);
        }
        let app = AppRef::apps_v1(WorkloadKind::StatefulSet, ns, &st.owner_controller_name);
        self.keeps(Some(&app), name).await
    }
}
