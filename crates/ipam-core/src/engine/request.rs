//! What the engine is asked ([`AllocateRequest`], [`ReleaseRequest`]) and what it answers
//! ([`Allocation`], [`Released`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addressing::Route;
use crate::workload::AppRef;

/// What selection knows about the pod and where it runs.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations (raw; Multus annotations are read from here).
    pub annotations: BTreeMap<String, String>,
    /// The pod's application (top controller), if any.
    pub app: Option<AppRef>,
    /// UID of the application, to tell its auto pools from a former incarnation's.
    pub app_uid: Option<String>,
    /// Node name.
    pub node: String,
    /// Node labels.
    pub node_labels: BTreeMap<String, String>,
    /// Namespace labels.
    pub namespace_labels: BTreeMap<String, String>,
    /// Namespace annotations (default pools).
    pub namespace_annotations: BTreeMap<String, String>,
}

/// One NIC of an allocation: its interface, and what its CNI network's configuration says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicRequest {
    /// The pod interface.
    pub interface: String,
    /// The CNI network name (also used to match `multusName` when no Multus annotation names
    /// the NIC's NetworkAttachmentDefinition).
    pub network: Option<String>,
    /// `default_ipv4_ippool` of the CNI config.
    pub default_ipv4_pools: Vec<String>,
    /// `default_ipv6_ippool` of the CNI config.
    pub default_ipv6_pools: Vec<String>,
    /// `clean_gateway` of the CNI config.
    pub clean_gateway: Option<bool>,
}

/// An allocation request: one pod, one container, one or more NICs.
#[derive(Debug, Clone, Default)]
pub struct AllocateRequest {
    /// The pod and its surroundings (labels, annotations, application, node, namespace).
    pub pod: PodContext,
    /// The pod UID (a new one after every pod re-creation).
    pub pod_uid: String,
    /// The CNI container (sandbox) id.
    pub container_id: String,
    /// The container's network namespace path (how embedded mode tells it is alive).
    pub netns: Option<String>,
    /// The NICs, each with its CNI network's configuration.
    pub nics: Vec<NicRequest>,
}

/// The IPs of one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicAddresses {
    /// The pod interface.
    pub interface: String,
    /// One address per family, with the pool subnet's prefix length.
    pub ips: Vec<AllocatedIp>,
    /// The pool routes and the pod's routes annotation entries whose gateway is on this NIC.
    pub routes: Vec<Route>,
    /// No default route through this NIC's gateway.
    pub clean_gateway: bool,
}

/// One address handed to a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedIp {
    /// The address with the pool subnet's prefix length (`10.6.168.171/16`).
    pub address: IpNet,
    /// The pool's gateway.
    pub gateway: Option<IpAddr>,
    /// The pool it came from.
    pub pool: String,
}

/// The result of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Per requested NIC, in request order.
    pub nics: Vec<NicAddresses>,
}

/// A release request (CNI DEL).
#[derive(Debug, Clone, Default)]
pub struct ReleaseRequest {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID, if known.
    pub pod_uid: String,
    /// The container (sandbox) id.
    pub container_id: String,
    /// Only these interfaces (all of the container's when `None`).
    pub interfaces: Option<Vec<String>>,
    /// The pod's application, if known (otherwise taken from the endpoint).
    pub app: Option<AppRef>,
}

/// What a release did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// IPs freed.
    pub ips: Vec<PoolIp>,
    /// IPs kept because the pod is a StatefulSet pod its StatefulSet keeps.
    pub kept_for_statefulset: Vec<PoolIp>,
}

/// An IP of a pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolIp {
    /// The pool.
    pub pool: String,
    /// The address.
    pub ip: IpAddr,
}
