//! Berth's allocation core: fixed IPs on every NIC of a pod, from per-application pools.
//!
//! # The objects
//!
//! Berth speaks Spiderpool's API (`spiderpool.spidernet.io/v2beta1`), so Spiderpool's YAML
//! applies as it is:
//!
//! - a [`SpiderSubnet`] is an underlay subnet and the IPs pools may be carved from;
//!   `status.controlledIPPools` records which pool holds which of them;
//! - a [`SpiderIPPool`] holds the IPs pods get; `status.allocatedIPs` records who holds each one
//!   and is the authority on ownership. *Auto pools* are carved from a subnet for one
//!   application (Deployment or StatefulSet) and sized `replicas + N` (`ippool-ip-number: "+N"`)
//!   or `N`; they grow and shrink with the replica count and go with the application;
//! - a [`SpiderEndpoint`] per pod lists the IPs of each NIC; a StatefulSet pod gets them back
//!   after a restart;
//! - a [`SpiderReservedIP`] lists IPs never handed out.
//!
//! # The layers
//!
//! - Pure values and functions, no I/O: IP sets in Spiderpool's syntax ([`IpSet`]), the
//!   O(log n) [`Allocator`], validation equal to Spiderpool's webhooks, the annotations
//!   ([`annotations`]), pool selection and auto-pool carving.
//! - The [`store::Store`] trait: a versioned object store with optimistic concurrency and
//!   Kubernetes semantics (status subresource, finalizers, label selectors), implemented in
//!   memory here ([`store::MemStore`]), on sled and on the Kubernetes API in sibling crates, all
//!   held to one conformance suite (feature `conformance`). Backends only store; they never
//!   choose an IP.
//! - The [`Engine`], generic over the store: allocate (all NICs and families, all or
//!   nothing, idempotent), release, application reconcile, GC. It orders its writes so that a
//!   crash between any two leaves no IP with two holders. [`engine`] tells how, and how
//!   applications get their auto pools.
//!
//! Test machinery is behind features, for the tests and fuzz targets of Berth's crates:
//! `conformance` (the store conformance suite), `audit` (whole-store invariant checks) and
//! `fuzzing` (the property checks of the fuzz targets).
//!
//! # Example
//!
//! A pod's NIC gets an IP from a manual pool, on the in-memory store (the sled store,
//! `ipam-store-sled`, is used the same way; `examples/embed.rs` of the `berth` crate shows it):
//!
//! ```
//! use ipam_core::store::MemStore;
//! use ipam_core::{AllocateRequest, Engine, NicRequest, PodContext, SpiderIPPool, ips};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let engine = Engine::new(MemStore::new());
//! let pool = SpiderIPPool::new("pool-a", "10.7.0.0/16".parse()?, ips!["10.7.168.171-10.7.168.180"]);
//! engine.apply(pool).await?;
//!
//! let request = AllocateRequest {
//!     pod: PodContext { namespace: "default".into(), name: "web-0".into(), ..Default::default() },
//!     pod_uid: "pod-uid-1".into(),
//!     container_id: "c1".into(),
//!     nics: vec![NicRequest {
//!         interface: "net1".into(),
//!         default_ipv4_pools: vec!["pool-a".into()],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let got = engine.allocate(&request).await?;
//! assert_eq!(got.nics[0].ips[0].address.to_string(), "10.7.168.171/16");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

mod addressing;
mod allocator;
pub mod annotations;
#[cfg(any(test, feature = "audit"))]
pub mod audit;
mod autopool;
mod endpoint;
pub mod engine;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod meta;
mod pool;
mod range;
mod reserved;
mod select;
pub mod store;
mod subnet;
mod workload;

pub use addressing::{JsonString, Route, cidr_label, family_of, usable_ips};
pub use allocator::{Allocator, Exhausted};
pub use endpoint::{EndpointStatus, NicAllocation, PodAllocation, SpiderEndpoint};
pub use engine::{
    AllocateRequest, AllocatedIp, Allocation, AnyObject, Applied, ClaimRemoved, Engine,
    EngineConfig, GcReleased, GcReport, Liveness, NicAddresses, NicRequest, PodContext, PoolIp,
    ReleaseRequest, Released, Reservation, Reserved,
};
pub use error::{Error, Problem, Unavailable};
pub use meta::{
    Kind, LabelSelector, LabelSelectorRequirement, Object, ObjectKey, ObjectMeta, OwnerReference,
    UnknownKind,
};
pub use pool::{IpRecord, PoolSpec, PoolStatus, SpiderIPPool, owning_subnet};
pub use range::{IpFamily, IpRange, IpSet, cmp_ip, network_and_broadcast, parse_cidr};
pub use reserved::{ReservedIpSpec, SpiderReservedIP};
pub use subnet::{PoolClaim, SpiderSubnet, SubnetSpec, SubnetStatus};
pub use workload::{
    AppKind, AppRef, Deployment, InvalidApplicationId, Ordinals, PodTemplate, StatefulSet,
    Workload, WorkloadKind, WorkloadSpec, pod_ordinal,
};

/// `apiVersion` of Spiderpool's kinds.
pub const SPIDERPOOL_API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";
/// The finalizer Spiderpool puts on pools and subnets.
pub const FINALIZER: &str = "spiderpool.spidernet.io";
/// Label on subnets: their CIDR (`10-6-0-0-16`).
pub const LABEL_SUBNET_CIDR: &str = "ipam.spidernet.io/subnet-cidr";
/// Label on pools: their CIDR.
pub const LABEL_IPPOOL_CIDR: &str = "ipam.spidernet.io/ippool-cidr";
/// Label on pools: the SpiderSubnet of their CIDR.
pub const LABEL_OWNER_SUBNET: &str = "ipam.spidernet.io/owner-spider-subnet";
/// Label on auto pools: group and version of the application (`apps_v1`).
pub const LABEL_OWNER_APP_GV: &str = "ipam.spidernet.io/owner-application-gv";
/// Label on auto pools: kind of the application.
pub const LABEL_OWNER_APP_KIND: &str = "ipam.spidernet.io/owner-application-kind";
/// Label on auto pools: namespace of the application.
pub const LABEL_OWNER_APP_NAMESPACE: &str = "ipam.spidernet.io/owner-application-namespace";
/// Label on auto pools: name of the application.
pub const LABEL_OWNER_APP_NAME: &str = "ipam.spidernet.io/owner-application-name";
/// Label on auto pools: uid of the application.
pub const LABEL_OWNER_APP_UID: &str = "ipam.spidernet.io/owner-application-uid";
/// Label on auto pools: the pod interface.
pub const LABEL_INTERFACE: &str = "ipam.spidernet.io/interface";
/// Label on auto pools: `IPv4` or `IPv6`.
pub const LABEL_IP_VERSION: &str = "ipam.spidernet.io/ip-version";
/// Label on auto pools: whether they go with the application.
pub const LABEL_IPPOOL_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";
/// podAffinity key of auto pools: API group of the application.
pub const APP_API_GROUP: &str = "ipam.spidernet.io/app-api-group";
/// podAffinity key of auto pools: API version of the application.
pub const APP_API_VERSION: &str = "ipam.spidernet.io/app-api-version";
/// podAffinity key of auto pools: kind of the application.
pub const APP_KIND: &str = "ipam.spidernet.io/app-kind";
/// podAffinity key of auto pools: namespace of the application.
pub const APP_NAMESPACE: &str = "ipam.spidernet.io/app-namespace";
/// podAffinity key of auto pools: name of the application.
pub const APP_NAME: &str = "ipam.spidernet.io/app-name";
