//! The IPAM operations on an engine, shared by embedded mode (the plugin's own engine) and
//! the agent (its engine, behind the endpoints of [`crate::agent`]): the same code answers
//! in both modes, so the two cannot drift apart.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam_core::engine::{AllocateRequest, Engine, NicAddresses, ReleaseRequest};
use ipam_core::store::{Store, TypedStore};
use ipam_core::{AppRef, Kind, PoolIp, SpiderEndpoint};
use ipam_core::{NicRequest, PodContext};
use ipnet::IpNet;

use crate::agent::protocol::{
    AddArgs, AddResponse, CheckArgs, DelArgs, DelResponse, GcResponse, IpAddress, NetworkGcArgs,
    NicRoute, ReleasedIp,
};
use crate::error::Error;
use crate::ipam::liveness::NetnsLiveness;

/// The namespace of pods whose runtime names none.
pub const DEFAULT_NAMESPACE: &str = "default";

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

/// The checks the CNI layer made on the plugin's side, made again for requests that reach
/// the agent from other clients: container id and interface name by the CNI rules (code 4),
/// a pod name (code 7).
fn validate(container_id: &str, if_name: &str, pod_name: Option<&str>) -> Result<(), Error> {
    berth_cni::env::validate_container_id(container_id)?;
    berth_cni::env::validate_ifname(if_name)?;
    if pod_name.is_some_and(str::is_empty) {
        return Err(Error::invalid_config("the request names no pod (podName)"));
    }
    Ok(())
}

/// This node's name: the kernel's host name (of this UTS namespace), `localhost` if unreadable.
pub fn node_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

/// ADD of one NIC: allocates through the engine and answers the NIC's addresses and routes.
///
/// With an owner (`BERTH_OWNER`), the pod is that workload's: its pod-template annotations and
/// labels and its application decide the pools. An owner the store does not know is
/// [`Error::UnknownOwner`] (code 104). `node` is used when the request names none.
pub async fn add<S: Store>(
    engine: &Engine<S>,
    args: &AddArgs,
    node: &str,
) -> Result<AddResponse, Error> {
    durably(engine, add_now(engine, args, node, None)).await
}

/// Where the agent learns a pod's facts (labels, annotations, application, node, namespace)
/// when it runs on a cluster; in embedded mode the request and `BERTH_OWNER` are all there is.
#[async_trait::async_trait]
pub trait PodSource: Send + Sync {
    /// The facts of the pod `namespace/name`, incarnation `uid` when the runtime gives one,
    /// for an ADD on this node: [`Error::UnknownPod`] when there is no such pod here.
    async fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<PodContext, Error>;

    /// Whether the pod `namespace/name` (incarnation `uid` when given) is going away: deleted,
    /// terminating, or replaced by another pod of its name. Its DEL then releases every NIC
    /// of the container at once. The default says no, so that each DEL releases its own NIC.
    async fn leaving(&self, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool, Error> {
        let _ = (namespace, name, uid);
        Ok(false)
    }
}

/// The pod's other NICs that its annotations name, which an ADD allocates ahead, in the same
/// engine call as its own NIC: `ipam.spidernet.io/subnets`, else `ipam.spidernet.io/ippools`
/// items with interface names. Spiderpool does the same: the pod's NICs take their IPs
/// together, all or nothing, with one write per pool and one endpoint write, and the ADD of
/// each other NIC finds its IPs recorded. A NIC allocated ahead records no CNI network name
/// (its own ADD does not rewrite the pool for that alone), so a CNI GC naming that network
/// leaves it to the controller's GC. Annotations that do not parse name nothing here; the
/// engine reports them.
fn ahead_of(pod: &PodContext, own: &str) -> Vec<NicRequest> {
    let Ok(parsed) = ipam_core::annotations::PodAnnotations::parse(&pod.annotations) else {
        return Vec::new();
    };
    let named = parsed.named_interfaces();
    if !named.iter().any(|n| n == own) {
        return Vec::new();
    }
    named
        .into_iter()
        .filter(|n| n != own)
        .map(|interface| NicRequest {
            interface,
            ..NicRequest::default()
        })
        .collect()
}

/// [`add`], with the pod's facts from `pods` (Kubernetes mode): `BERTH_OWNER` is not used.
///
/// In Kubernetes mode an ADD that fails because the API server cannot answer (it restarts,
/// or is overloaded: code 11) is made again, whole, for up to [`RIDE_OUT`]: it is idempotent,
/// and a runtime's own retry would come seconds later and count as a failed sandbox.
pub async fn add_with<S: Store>(
    engine: &Engine<S>,
    args: &AddArgs,
    node: &str,
    pods: Option<&dyn PodSource>,
) -> Result<AddResponse, Error> {
    riding_out(pods.is_some(), || {
        durably(engine, add_now(engine, args, node, pods))
    })
    .await
}

/// How long the agent makes an ADD or DEL again, in Kubernetes mode, while the API server
/// cannot answer: a restart of the API server takes a few seconds.
pub const RIDE_OUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The longest pause between two attempts of [`riding_out`]. An attempt while the API server
/// is down costs a refused connection, and a pod waits up to this long after it is back.
const RIDE_OUT_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs `op` again while it fails with "try again later" (code 11), for up to [`RIDE_OUT`]
/// after its first such failure when `cluster`, pausing from 100 ms doubling to
/// [`RIDE_OUT_PAUSE`]; once otherwise. (An ADD may have waited long for its pool before the
/// API server went away; the bound counts from then.)
async fn riding_out<T, F, Fut>(cluster: bool, op: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut first_failure = None;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match op().await {
            Err(e)
                if cluster
                    && e.code() == berth_cni::error::code::TRY_AGAIN_LATER
                    && first_failure
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        + pause
                        < RIDE_OUT =>
            {
                tracing::info!(error = %e, "the cluster cannot answer now; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RIDE_OUT_PAUSE);
            }
            other => return other,
        }
    }
}

/// Runs an operation's writes with one wait for the disk at the end instead of one per write
/// (`ipam_core::store::deferring_durability`); its answer goes out only after that.
async fn durably<S: Store, T>(
    engine: &Engine<S>,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    ipam_core::store::deferring_durability(engine.store(), work).await
}

async fn add_now<S: Store>(
    engine: &Engine<S>,
    args: &AddArgs,
    node: &str,
    pods: Option<&dyn PodSource>,
) -> Result<AddResponse, Error> {
    validate(&args.container_id, &args.if_name, Some(&args.pod_name))?;
    let namespace = namespace_or_default(&args.pod_namespace).to_owned();
    let mut pod = match pods {
        Some(pods) => {
            let uid = Some(args.pod_uid.as_str()).filter(|u| !u.is_empty());
            pods.pod(&namespace, &args.pod_name, uid).await?
        }
        None => PodContext {
            namespace: namespace.clone(),
            name: args.pod_name.clone(),
            node: args.node.clone().unwrap_or_else(|| node.to_owned()),
            ..PodContext::default()
        },
    };
    if let (None, Some(owner)) = (pods, &args.owner) {
        let app = AppRef::apps_v1(owner.kind, &namespace, &owner.name);
        let Some(workload) = engine.workload(&app).await? else {
            return Err(Error::UnknownOwner(format!(
                "BERTH_OWNER {owner} names no workload registered in namespace {namespace:?}: \
                 register it with `berth apply -f <manifest>` on the data dir this plugin uses"
            )));
        };
        pod.annotations = workload.pod_annotations().clone();
        pod.labels = workload.spec.template.metadata.labels.clone();
        pod.app_uid = workload.metadata.uid.clone();
        pod.app = Some(app);
    }
    let mut request = AllocateRequest {
        pod,
        pod_uid: args.pod_uid.clone(),
        container_id: args.container_id.clone(),
        netns: Some(args.net_namespace.clone()).filter(|n| !n.is_empty()),
        nics: vec![NicRequest {
            interface: args.if_name.clone(),
            network: args.network.clone(),
            default_ipv4_pools: args.default_ipv4_ippool.clone(),
            default_ipv6_pools: args.default_ipv6_ippool.clone(),
            clean_gateway: Some(args.clean_gateway),
        }],
    };
    if pods.is_some() {
        let ahead = ahead_of(&request.pod, &args.if_name);
        request.nics.extend(ahead);
    }
    let allocation = engine.allocate(&request).await?;
    let nic = allocation
        .nics
        .into_iter()
        .find(|n| n.interface == args.if_name)
        .ok_or_else(|| {
            Error::internal(
                format!("the engine answered no addresses for {}", args.if_name),
                None,
            )
        })?;
    tracing::debug!(
        container_id = %args.container_id,
        ifname = %args.if_name,
        pod = %format!("{namespace}/{}", args.pod_name),
        ips = ?nic.ips.iter().map(|i| format!("{} ({})", i.address, i.pool)).collect::<Vec<_>>(),
        "allocated"
    );
    Ok(response_of(&nic))
}

/// The answer for one NIC: its addresses; a default route (`0.0.0.0/0`, `::/0`) via each
/// family's gateway unless the NIC is `clean_gateway`; then the pool's and the pod's
/// `ipam.spidernet.io/routes` routes. A destination is listed once, the first time (pool
/// validation refuses default routes, so the gateway's is the one).
pub fn response_of(nic: &NicAddresses) -> AddResponse {
    let mut routes: Vec<NicRoute> = Vec::new();
    let mut push = |dst: IpNet, gw: IpAddr| {
        if !routes.iter().any(|r| r.dst == dst) {
            routes.push(NicRoute {
                if_name: nic.interface.clone(),
                dst,
                gw,
            });
        }
    };
    if !nic.clean_gateway {
        for ip in &nic.ips {
            if let Some(gw) = ip.gateway {
                let default = match gw {
                    IpAddr::V4(_) => IpNet::V4(Default::default()),
                    IpAddr::V6(_) => IpNet::V6(Default::default()),
                };
                push(default, gw);
            }
        }
    }
    for r in &nic.routes {
        push(r.dst, r.gw);
    }
    AddResponse {
        ips: nic
            .ips
            .iter()
            .map(|ip| IpAddress {
                version: if ip.address.addr().is_ipv4() { 4 } else { 6 },
                address: ip.address,
                nic: nic.interface.clone(),
                ip_pool: ip.pool.clone(),
                gateway: ip.gateway,
                enable_ip_conflict_detection: false,
                enable_gateway_detection: false,
            })
            .collect(),
        routes,
    }
}

/// DEL of one NIC: releases what the container holds on it, and says what. Unknown
/// containers succeed; a StatefulSet pod its StatefulSet keeps keeps its IPs for its next
/// incarnation.
pub async fn del<S: Store>(engine: &Engine<S>, args: &DelArgs) -> Result<DelResponse, Error> {
    del_with(engine, args, None).await
}

/// [`del`], with the pod's state from `pods` (Kubernetes mode): when the pod is going away
/// ([`PodSource::leaving`]), the DEL releases every NIC of the container at once, as
/// Spiderpool's does, and the DELs of its other NICs find nothing left to do.
pub async fn del_with<S: Store>(
    engine: &Engine<S>,
    args: &DelArgs,
    pods: Option<&dyn PodSource>,
) -> Result<DelResponse, Error> {
    riding_out(pods.is_some(), || {
        durably(engine, del_now(engine, args, pods))
    })
    .await
}

async fn del_now<S: Store>(
    engine: &Engine<S>,
    args: &DelArgs,
    pods: Option<&dyn PodSource>,
) -> Result<DelResponse, Error> {
    validate(&args.container_id, &args.if_name, None)?;
    let namespace = namespace_or_default(&args.pod_namespace);
    let whole_pod = match pods {
        Some(pods) if !args.pod_name.is_empty() => {
            let uid = Some(args.pod_uid.as_str()).filter(|u| !u.is_empty());
            pods.leaving(namespace, &args.pod_name, uid).await?
        }
        _ => false,
    };
    let request = ReleaseRequest {
        namespace: namespace.to_owned(),
        name: args.pod_name.clone(),
        pod_uid: args.pod_uid.clone(),
        container_id: args.container_id.clone(),
        interfaces: (!whole_pod).then(|| vec![args.if_name.clone()]),
        app: None,
    };
    let released = engine.release(&request).await?;
    tracing::debug!(
        container_id = %args.container_id,
        ifname = %args.if_name,
        whole_pod,
        released = ?released.ips,
        kept_for_statefulset = ?released.kept_for_statefulset,
        "released"
    );
    let pod = format!("{}/{}", request.namespace, request.name);
    let entry = |PoolIp { pool, ip }| ReleasedIp {
        pool,
        ip,
        pod: pod.clone(),
    };
    Ok(DelResponse {
        released: released.ips.into_iter().map(entry).collect(),
        kept_for_statefulset: released
            .kept_for_statefulset
            .into_iter()
            .map(entry)
            .collect(),
    })
}

/// CHECK of one NIC: every address of `prevResult` is held by this container on this
/// interface (with no addresses given: at least one is). Otherwise [`Error::NotHeld`] (105)
/// naming the address and who holds it now, if anyone.
pub async fn check<S: Store>(engine: &Engine<S>, args: &CheckArgs) -> Result<(), Error> {
    validate(&args.container_id, &args.if_name, None)?;
    let records = engine.records().await?;
    // A record that names no container (reserved by the controller, or Spiderpool's) is the
    // pod's: this container's when the pod's endpoint names it.
    let namespace = namespace_or_default(&args.pod_namespace);
    let pod = format!("{namespace}/{}", args.pod_name);
    let endpoint: Option<SpiderEndpoint> = if args.pod_name.is_empty() {
        None
    } else {
        engine
            .store()
            .get_as(Some(namespace), &args.pod_name)
            .await?
    };
    let current_uid = endpoint
        .map(|e| e.current())
        .filter(|c| c.container_id.as_deref() == Some(args.container_id.as_str()))
        .map(|c| c.uid);
    let mut held: Vec<IpAddr> = Vec::new();
    let mut holders: Vec<(IpAddr, String, String)> = Vec::new();
    for (pool, ips) in &records {
        for (ip, r) in ips {
            let ours = match &r.container_id {
                Some(c) => c == &args.container_id,
                None => r.pod == pod && current_uid.as_deref() == Some(r.pod_uid.as_str()),
            };
            if ours && r.interface.as_deref() == Some(args.if_name.as_str()) {
                held.push(*ip);
            } else if args.ips.contains(ip) {
                holders.push((*ip, pool.clone(), r.pod.clone()));
            }
        }
    }
    if args.ips.is_empty() && held.is_empty() {
        return Err(Error::NotHeld(format!(
            "container {} holds no IP on {}",
            args.container_id, args.if_name
        )));
    }
    for ip in &args.ips {
        if held.contains(ip) {
            continue;
        }
        let now = holders
            .iter()
            .find(|(h, _, _)| h == ip)
            .map(|(_, pool, pod)| format!("; pool {pool} records it for {pod}"))
            .unwrap_or_else(|| "; no pool records it".to_owned());
        return Err(Error::NotHeld(format!(
            "{ip} of prevResult is not held by container {} on {}{now}",
            args.container_id, args.if_name
        )));
    }
    Ok(())
}

/// CNI 1.1 GC of one network: releases every attachment recorded for `network` (container
/// and interface) that `valid_attachments` does not list; with no list, nothing. IPs kept for
/// a StatefulSet pod name stay reserved (detached from the container). Keeps going after a
/// failure and reports the first one at the end.
pub async fn network_gc<S: Store>(
    engine: &Engine<S>,
    args: &NetworkGcArgs,
) -> Result<GcResponse, Error> {
    durably(engine, network_gc_now(engine, args)).await
}

async fn network_gc_now<S: Store>(
    engine: &Engine<S>,
    args: &NetworkGcArgs,
) -> Result<GcResponse, Error> {
    let mut out = GcResponse::default();
    let Some(valid) = &args.valid_attachments else {
        tracing::debug!(network = %args.network, "GC without cni.dev/valid-attachments: releasing nothing");
        return Ok(out);
    };
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    // (pod, pod uid, container, interface) of the attachments to release.
    let mut stale: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for ips in engine.records().await?.values() {
        for r in ips.values() {
            let (Some(container), Some(interface)) = (&r.container_id, &r.interface) else {
                continue;
            };
            if r.network.as_deref() == Some(args.network.as_str())
                && !valid.contains(&(container.as_str(), interface.as_str()))
            {
                stale.insert((
                    r.pod.clone(),
                    r.pod_uid.clone(),
                    container.clone(),
                    interface.clone(),
                ));
            }
        }
    }
    let mut first_error = None;
    for (pod, pod_uid, container_id, interface) in stale {
        let (namespace, name) = pod.split_once('/').unwrap_or((DEFAULT_NAMESPACE, &pod));
        let request = ReleaseRequest {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            pod_uid,
            container_id: container_id.clone(),
            interfaces: Some(vec![interface.clone()]),
            app: None,
        };
        match engine.release(&request).await {
            Ok(released) => {
                tracing::info!(network = %args.network, %container_id, %interface, ips = ?released.ips, "GC released a stale attachment");
                let entry = |PoolIp { pool, ip }| ReleasedIp {
                    pool,
                    ip,
                    pod: pod.clone(),
                };
                out.released.extend(released.ips.into_iter().map(entry));
                out.kept_for_statefulset
                    .extend(released.kept_for_statefulset.into_iter().map(entry));
            }
            Err(e) => {
                tracing::warn!(network = %args.network, %container_id, %interface, error = %e, "GC could not release an attachment");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// `berth gc` on the store: frees every allocation whose recorded netns is gone
/// ([`NetnsLiveness`]), and repairs what crashes left (see `Engine::gc`).
pub async fn gc<S: Store>(engine: &Engine<S>) -> Result<GcResponse, Error> {
    let report = durably(engine, async { Ok(engine.gc(&NetnsLiveness).await?) }).await?;
    Ok(GcResponse {
        released: report
            .released
            .into_iter()
            .map(|r| ReleasedIp {
                pool: r.pool,
                ip: r.ip,
                pod: r.holder,
            })
            .collect(),
        kept_for_statefulset: Vec::new(),
    })
}

/// STATUS / health: the store answers a read.
pub async fn healthy<S: Store>(engine: &Engine<S>) -> Result<(), Error> {
    engine
        .store()
        .list(Kind::SpiderSubnet, None, None)
        .await
        .map(|_| ())
        .map_err(|e| Error::not_available(format!("the IPAM store does not answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::engine::AllocatedIp;
    use serde_json::json;

    fn nic(clean_gateway: bool) -> NicAddresses {
        NicAddresses {
            interface: "net1".into(),
            ips: vec![
                AllocatedIp {
                    address: "10.7.168.173/16".parse().unwrap(),
                    gateway: Some("10.7.0.1".parse().unwrap()),
                    pool: "pool4".into(),
                },
                AllocatedIp {
                    address: "fd00:7::a8ad/64".parse().unwrap(),
                    gateway: Some("fd00:7::1".parse().unwrap()),
                    pool: "pool6".into(),
                },
            ],
            routes: vec![
                ipam_core::Route {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: "10.7.0.254".parse().unwrap(),
                },
                ipam_core::Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: "10.7.0.254".parse().unwrap(),
                },
            ],
            clean_gateway,
        }
    }

    #[test]
    fn default_routes_via_each_gateway_then_the_pool_routes() {
        let r = response_of(&nic(false));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({
                "ips": [
                    {"version": 4, "address": "10.7.168.173/16", "nic": "net1", "ipPool": "pool4", "gateway": "10.7.0.1"},
                    {"version": 6, "address": "fd00:7::a8ad/64", "nic": "net1", "ipPool": "pool6", "gateway": "fd00:7::1"}
                ],
                "routes": [
                    {"ifName": "net1", "dst": "0.0.0.0/0", "gw": "10.7.0.1"},
                    {"ifName": "net1", "dst": "::/0", "gw": "fd00:7::1"},
                    {"ifName": "net1", "dst": "10.96.0.0/12", "gw": "10.7.0.254"}
                ]
            })
        );
    }

    #[test]
    fn clean_gateway_leaves_only_the_pool_routes() {
        let r = response_of(&nic(true));
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            ["10.96.0.0/12 via 10.7.0.254", "0.0.0.0/0 via 10.7.0.254"]
        );
        assert_eq!(r.ips[0].gateway, Some("10.7.0.1".parse().unwrap()));
    }

    #[test]
    fn node_name_is_never_empty() {
        assert!(!node_name().is_empty());
    }

    /// A cluster's pod source of one pod, which may be going away.
    struct OnePod {
        annotations: std::collections::BTreeMap<String, String>,
        leaving: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl PodSource for OnePod {
        async fn pod(
            &self,
            namespace: &str,
            name: &str,
            _: Option<&str>,
        ) -> Result<PodContext, Error> {
            Ok(PodContext {
                namespace: namespace.into(),
                name: name.into(),
                annotations: self.annotations.clone(),
                node: "node-a".into(),
                ..PodContext::default()
            })
        }

        async fn leaving(&self, _: &str, _: &str, _: Option<&str>) -> Result<bool, Error> {
            Ok(self.leaving.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    fn add_args(if_name: &str, clean_gateway: bool) -> AddArgs {
        AddArgs {
            container_id: "c1".into(),
            if_name: if_name.into(),
            pod_namespace: "ns".into(),
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
            clean_gateway,
            network: Some(format!("net-of-{if_name}")),
            ..AddArgs::default()
        }
    }

    fn del_args(if_name: &str) -> DelArgs {
        DelArgs {
            container_id: "c1".into(),
            if_name: if_name.into(),
            net_namespace: None,
            pod_namespace: "ns".into(),
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
        }
    }

    /// In Kubernetes mode the first ADD takes the IPs of every NIC the pod's annotations
    /// name, in one engine call; the other NIC's ADD finds them without writing a pool or
    /// the endpoint again (unless its own config changes its gateway); a DEL of a pod going
    /// away releases every NIC, and one of a pod that stays only its own.
    #[tokio::test]
    async fn the_pods_nics_are_allocated_together_and_released_together() {
        use ipam_core::store::{MemStore, TypedStore};
        use ipam_core::{SpiderEndpoint, SpiderIPPool, ips};
        let engine = Engine::new(MemStore::new());
        for (name, cidr, range, gateway) in [
            ("p0", "10.6.0.0/16", ips!["10.6.0.10-10.6.0.19"], "10.6.0.1"),
            ("p1", "10.7.0.0/16", ips!["10.7.0.10-10.7.0.19"], "10.7.0.1"),
        ] {
            let mut pool = SpiderIPPool::new(name, cidr.parse().unwrap(), range);
            pool.spec.gateway = Some(gateway.parse().unwrap());
            engine.apply(pool).await.unwrap();
        }
        let pods = OnePod {
            annotations: [(
                "ipam.spidernet.io/ippools".to_string(),
                r#"[{"interface":"eth0","ipv4":["p0"]},{"interface":"net1","ipv4":["p1"]}]"#
                    .to_string(),
            )]
            .into(),
            leaving: false.into(),
        };
        let pod_source: Option<&dyn PodSource> = Some(&pods);
        let versions = || async {
            let mut v = Vec::new();
            for p in ["p0", "p1"] {
                let pool: SpiderIPPool = engine.store().get_as(None, p).await.unwrap().unwrap();
                v.push(pool.metadata.resource_version.clone());
            }
            let ep: Option<SpiderEndpoint> =
                engine.store().get_as(Some("ns"), "web").await.unwrap();
            v.push(ep.and_then(|e| e.metadata.resource_version.clone()));
            v
        };

        let eth0 = add_with(&engine, &add_args("eth0", false), "node-a", pod_source)
            .await
            .unwrap();
        assert_eq!(eth0.ips[0].address.to_string(), "10.6.0.10/16");
        let records = engine.records().await.unwrap();
        let net1_ip: IpAddr = "10.7.0.10".parse().unwrap();
        let ahead = &records["p1"][&net1_ip];
        assert_eq!(
            (
                ahead.pod.as_str(),
                ahead.interface.as_deref(),
                ahead.network.as_deref()
            ),
            ("ns/web", Some("net1"), None),
            "net1 is allocated ahead, with no network name"
        );
        assert_eq!(
            records["p0"][&"10.6.0.10".parse::<IpAddr>().unwrap()]
                .network
                .as_deref(),
            Some("net-of-eth0")
        );

        let before = versions().await;
        let net1 = add_with(&engine, &add_args("net1", false), "node-a", pod_source)
            .await
            .unwrap();
        assert_eq!(net1.ips[0].address.to_string(), "10.7.0.10/16");
        assert_eq!(versions().await, before, "net1's own ADD writes nothing");
        let default_route = |r: &AddResponse| r.routes.iter().any(|r| r.dst.prefix_len() == 0);
        assert!(default_route(&net1), "{net1:?}");

        // Its own config's clean_gateway wins over what the ahead allocation recorded.
        let again = add_with(&engine, &add_args("net1", true), "node-a", pod_source)
            .await
            .unwrap();
        assert!(!default_route(&again), "{again:?}");
        assert_eq!(again.ips, net1.ips);

        // A DEL while the pod stays (a sandbox being made again) releases its NIC only.
        let one = del_with(&engine, &del_args("net1"), pod_source)
            .await
            .unwrap();
        assert_eq!(one.released.len(), 1);
        assert_eq!(engine.records().await.unwrap()["p0"].len(), 1);

        // The pod goes: the first DEL releases every NIC, the next finds nothing.
        add_with(&engine, &add_args("net1", false), "node-a", pod_source)
            .await
            .unwrap();
        pods.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let all = del_with(&engine, &del_args("net1"), pod_source)
            .await
            .unwrap();
        assert_eq!(all.released.len(), 2, "{all:?}");
        let rest = del_with(&engine, &del_args("eth0"), pod_source)
            .await
            .unwrap();
        assert!(rest.released.is_empty());
        let left: usize = engine
            .records()
            .await
            .unwrap()
            .values()
            .map(|r| r.len())
            .sum();
        assert_eq!(left, 0);
        let ep: Option<SpiderEndpoint> = engine.store().get_as(Some("ns"), "web").await.unwrap();
        assert!(ep.is_none(), "the endpoint went with the pod");
    }

    #[test]
    fn only_nics_the_annotations_name_are_allocated_ahead() {
        let pod = |key: &str, value: &str| PodContext {
            annotations: [(key.to_string(), value.to_string())].into(),
            ..PodContext::default()
        };
        let names = |v: Vec<NicRequest>| v.into_iter().map(|n| n.interface).collect::<Vec<_>>();
        let subnets = pod(
            "ipam.spidernet.io/subnets",
            r#"[{"interface":"eth0","ipv4":["s0"]},{"interface":"net1","ipv4":["s1"]}]"#,
        );
        assert_eq!(names(ahead_of(&subnets, "eth0")), ["net1"]);
        assert_eq!(names(ahead_of(&subnets, "net1")), ["eth0"]);
        assert!(
            ahead_of(&subnets, "net2").is_empty(),
            "a NIC they do not name"
        );
        let unnamed = pod(
            "ipam.spidernet.io/ippools",
            r#"[{"ipv4":["p0"]},{"ipv4":["p1"]}]"#,
        );
        assert!(
            ahead_of(&unnamed, "eth0").is_empty(),
            "items without interface names"
        );
        assert!(ahead_of(&PodContext::default(), "eth0").is_empty());
        assert!(ahead_of(&pod("ipam.spidernet.io/subnets", "not json"), "eth0").is_empty());
    }

    /// CHECK counts a record that names no container (reserved by the controller, or
    /// Spiderpool's) as held by the container the pod's endpoint names, and by no other.
    #[tokio::test]
    async fn check_finds_the_pods_records_without_a_container_for_its_current_sandbox() {
        use ipam_core::store::MemStore;
        use ipam_core::{SpiderIPPool, ips};
        let engine = Engine::new(MemStore::new());
        let pool = SpiderIPPool::new(
            "p0",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.0.10-10.6.0.19"],
        );
        engine.apply(pool).await.unwrap();
        let pods = OnePod {
            annotations: [(
                "ipam.spidernet.io/ippools".to_string(),
                r#"[{"interface":"eth0","ipv4":["p0"]}]"#.to_string(),
            )]
            .into(),
            leaving: false.into(),
        };
        let added = add_with(&engine, &add_args("eth0", false), "node-a", Some(&pods))
            .await
            .unwrap();
        let ip = added.ips[0].address.addr();
        let mut pool: SpiderIPPool = engine.store().get_as(None, "p0").await.unwrap().unwrap();
        let mut records = pool.records();
        records.get_mut(&ip).unwrap().container_id = None;
        pool.set_records(records);
        engine.store().update_status_as(&pool).await.unwrap();
        let args = |container: &str| CheckArgs {
            container_id: container.into(),
            if_name: "eth0".into(),
            pod_namespace: "ns".into(),
            pod_name: "web".into(),
            ips: vec![ip],
        };
        check(&engine, &args("c1")).await.unwrap();
        let other = check(&engine, &args("c0")).await;
        assert!(matches!(other, Err(Error::NotHeld(_))), "{other:?}");
    }
}
