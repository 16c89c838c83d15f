//! placeholder docs (rewritten below)
#![forbid(unsafe_code)]

mod addressing;
mod allocator;
pub mod annotations;
mod endpoint;
mod error;
mod meta;
mod pool;
mod range;
mod reserved;
mod subnet;
mod workload;

pub use addressing::{JsonString, Route, cidr_label, family_of, usable_ips};
pub use allocator::{Allocator, Exhausted};
pub use endpoint::{EndpointStatus, NicAllocation, PodAllocation, SpiderEndpoint};
pub use error::{Error, Problem};
pub use meta::{
    Kind, LabelSelector, LabelSelectorRequirement, Object, ObjectKey, ObjectMeta, OwnerReference,
};
pub use pool::{IpRecord, PoolSpec, PoolStatus, SpiderIPPool, owning_subnet};
pub use range::{IpFamily, IpRange, IpSet, cmp_ip, network_and_broadcast};
pub use reserved::{ReservedIpSpec, SpiderReservedIP};
pub use subnet::{PoolClaim, SpiderSubnet, SubnetSpec, SubnetStatus};
pub use workload::{
    AppRef, Deployment, Ordinals, PodTemplate, StatefulSet, Workload, WorkloadKind, WorkloadSpec,
    pod_ordinal,
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
