//! Reservations: IPs recorded for pods before their ADD, many pods to one pool write.
//!
//! An ADD writes each of its pod's pools and then the pod's endpoint: two pool writes and an
//! endpoint write for a pod with two NICs, because the pods of one application start on
//! different nodes and each node's agent writes for its own. The controller sees the pods
//! as they are created, before the scheduler has placed them. It records an IP per NIC and
//! family for each of them, with one write per pool for all the pods it saw together
//! ([`Engine::reserve`]). Such a record names the pod and its uid, and no container.
//!
//! The ADD then finds its pod's record in the pool it would allocate from, and takes it
//! as it is (`batch`'s `Allocate` adopts a record of the same pod uid and interface that
//! names no container, and writes nothing). Its only write is the endpoint, which names the
//! container. A release matches the record by the pod's uid; the endpoint says which
//! container is current, and the engine runs one pod's ADDs and DELs in turn (`pod_locks`),
//! so a DEL of an old sandbox never frees what its successor took.
//!
//! A reservation is only made where the controller's selection is the agent's: the pod's
//! `ippools` annotation names one pool per NIC and family, and that pool depends on nothing
//! the controller does not know (no node, namespace or Multus affinity). Anything else is
//! left to the ADD.
//!
//! Nor is anything reserved in auto pools: it gained nothing there. In the 1,000-pod bench
//! (100 Deployments, pods created at about 17 a second), with one shared pool per NIC, two
//! runs with reservations took 3.51 and 3.44 API writes to start a pod and 1.04x and 1.01x the
//! floor's time to all IPs, and a run without them the same day 4.04 and 1.25x. Where every
//! Deployment had its auto pools, a run that reserved in them made 4.46 writes and 1,742
//! conflicts (409), and one that did not 4.50 and 1,430. An auto pool's ADDs mostly wait for
//! the pool to be made and take their IPs the moment it exists, which a reservation, made
//! after the controller has seen the pool, can hardly come before; and its pods come a few
//! at a time, so a pass finds little to merge.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Engine;
use super::allocate::pod_key;
use super::batch::{OpResult, PoolOp};
use super::request::{NicRequest, PodContext, PoolIp};
use crate::annotations::PodAnnotations;
use crate::error::Error;
use crate::pool::{IpRecord, SpiderIPPool};
use crate::range::IpFamily;
use crate::select::{Source, select};
use crate::store::Store;
use crate::workload::WorkloadKind;

/// A pod to reserve IPs for, before its ADD.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    /// The pod: namespace, name, labels, annotations and application (with its uid). The
    /// node is not needed: nothing is reserved in a pool that depends on it.
    pub pod: PodContext,
    /// The pod's uid: the records are this incarnation's, whichever sandbox runs.
    pub pod_uid: String,
}

/// What [`Engine::reserve`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// The IPs recorded for each pod (`namespace/name`), taken now or found there.
    pub ips: Vec<(String, PoolIp)>,
}

/// What to do for one pod.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing: its ADD allocates as it would have.
    Skip,
    /// Record it in each of these pools.
    Take(Vec<(String, IpRecord)>),
}

/// Whether the controller would pick the same pool as the node: a pool that filters by
/// nothing the controller leaves out of the pod's context.
fn independent_of_node(pool: &SpiderIPPool) -> bool {
    let s = &pool.spec;
    s.node_name.is_empty()
        && s.node_affinity.is_none()
        && s.namespace_name.is_empty()
        && s.namespace_affinity.is_none()
        && s.multus_name.is_empty()
}

/// The pools to reserve `pod`'s IPs in (see the module documentation).
fn plan(pod: &Reservation, pools: &[Arc<SpiderIPPool>]) -> Plan {
    let ctx = &pod.pod;
    let Some(app) = &ctx.app else {
        return Plan::Skip;
    };
    // A StatefulSet pod may have IPs kept for its name, which its ADD takes back.
    if pod.pod_uid.is_empty() || app.workload_kind() == Some(WorkloadKind::StatefulSet) {
        return Plan::Skip;
    }
    let Ok(parsed) = PodAnnotations::parse(&ctx.annotations) else {
        return Plan::Skip;
    };
    let nics = parsed.named_interfaces();
    if nics.is_empty() {
        return Plan::Skip;
    }
    // Auto pools are left to the ADDs (see the module documentation).
    if parsed.subnets.is_some() {
        return Plan::Skip;
    }
    let mut take = Vec::new();
    for interface in nics {
        let nic = NicRequest {
            interface: interface.clone(),
            ..NicRequest::default()
        };
        let Ok(selection) = select(ctx, &parsed, &nic, pools) else {
            return Plan::Skip;
        };
        let named = |f: IpFamily| -> Option<usize> {
            let item = parsed.ippools_for(&interface).ok()??;
            let names = if f == IpFamily::V4 {
                &item.ipv4
            } else {
                &item.ipv6
            };
            (!names.iter().any(|n| n.contains('*'))).then_some(names.len())
        };
        for (family, candidates) in &selection.families {
            let one = selection.source == Source::PodIpPools
                && candidates.len() == 1
                && named(*family) == Some(1);
            let pool = pools
                .iter()
                .find(|p| Some(&p.metadata.name) == candidates.first());
            if !one || !pool.is_some_and(|p| independent_of_node(p) && !p.is_auto()) {
                return Plan::Skip;
            }
            let record = IpRecord {
                pod: pod_key(&ctx.namespace, &ctx.name),
                pod_uid: pod.pod_uid.clone(),
                container_id: None,
                interface: Some(interface.clone()),
                network: None,
                netns: None,
            };
            take.push((candidates[0].clone(), record));
        }
    }
    if take.is_empty() {
        Plan::Skip
    } else {
        Plan::Take(take)
    }
}

impl<S: Store> Engine<S> {
    /// Records IPs for `pods` ahead of their ADDs, one write per pool for all of them (with
    /// [`EngineConfig::batching`](super::EngineConfig::batching), the default; see the module
    /// documentation): what the controller does as pods are created.
    ///
    /// Idempotent: a pod that holds an IP in the pool already (reserved before, or its ADD
    /// came first) keeps it, and nothing is written for it. A pool that is full, closed or
    /// gone reserves nothing; the pod's ADD then decides, as it would have. The error is the
    /// first write that failed; the other pools' reservations stand.
    pub async fn reserve(&self, pods: &[Reservation]) -> Result<Reserved, Error> {
        let pools = self.pools().await?;
        let mut out = Reserved::default();
        // Per pool, the pod (`namespace/name`) of each operation, and the operation.
        let mut per_pool: BTreeMap<String, Vec<(String, PoolOp)>> = BTreeMap::new();
        for pod in pods {
            if let Plan::Take(records) = plan(pod, &pools) {
                for (pool, record) in records {
                    let op = PoolOp::Allocate {
                        record: record.clone(),
                        adopt: true,
                    };
                    per_pool.entry(pool).or_default().push((record.pod, op));
                }
            }
        }
        // The writes take the cached pools over only when no listing still holds them.
        drop(pools);
        let writes = per_pool.into_iter().map(|(pool, ops)| async move {
            let (who, ops): (Vec<String>, Vec<PoolOp>) = ops.into_iter().unzip();
            let results = self.pool_ops(&pool, ops).await;
            (pool, who, results)
        });
        let mut first_error = None;
        for (pool, who, results) in futures::future::join_all(writes).await {
            for (pod, result) in who.into_iter().zip(results) {
                match result {
                    Ok(OpResult::Allocated { ip, .. }) => {
                        out.ips.push((
                            pod,
                            PoolIp {
                                pool: pool.clone(),
                                ip,
                            },
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
