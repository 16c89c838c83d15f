//! Spiderpool's `spiderpool.spidernet.io/v2beta1` API, field for field, as Kubernetes resources.
//!
//! These types mirror the Go package `pkg/k8s/apis/spiderpool.spidernet.io/v2beta1` of
//! Spiderpool v1.2: the same JSON names, the same Go types (IPs and CIDRs are strings, counts are
//! `int64`, `status.allocatedIPs` and `status.controlledIPPools` are JSON documents in a string),
//! and the same optional and required fields. The CRDs of `deploy/crds/` are generated from them
//! ([`crate::crds`]), so an object Spiderpool wrote is a valid object here and the reverse.
//!
//! They are the wire format only. Berth's object model, with parsed IP ranges and validation, is
//! `ipam_core`'s; its serde shapes are the same JSON (the crate's tests hold the two together).
//!
//! | kind | scope | short name | status subresource |
//! |---|---|---|---|
//! | [`SpiderSubnet`] | cluster | `ss` | yes |
//! | [`SpiderIPPool`] | cluster | `sp` | yes |
//! | [`SpiderEndpoint`] | namespaced | `se` | no: its `status` is written by a plain update |
//! | [`SpiderReservedIP`] | cluster | `sr` | no (no status at all) |

mod endpoint;
mod pool;
mod reserved;
mod subnet;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

pub use endpoint::{IpAllocationDetail, PodIpAllocation, SpiderEndpoint, WorkloadEndpointStatus};
pub use pool::{IpPoolSpec, IpPoolStatus, PoolIpAllocation, SpiderIPPool};
pub use reserved::{ReservedIpSpec, SpiderReservedIP};
pub use subnet::{PoolIpPreAllocation, SpiderSubnet, SubnetSpec, SubnetStatus};

/// The API group.
pub const GROUP: &str = "spiderpool.spidernet.io";
/// The API version.
pub const VERSION: &str = "v2beta1";
/// `spiderpool.spidernet.io/v2beta1`.
pub const API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";
/// The category of every kind: `kubectl get spiderpool` lists them all.
pub const CATEGORY: &str = "spiderpool";

/// A route given to pods (`spec.routes[]`, `status.current.ips[].routes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    pub gw: String,
}

/// The schema of a `metav1.LabelSelector` field, as Kubernetes' own types declare it: the
/// selector is replaced whole by a merge (`x-kubernetes-map-type: atomic`), and so are its lists.
fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A label selector: matchLabels and matchExpressions, ANDed. An empty selector matches every object.",
        "type": "object",
        "properties": {
            "matchExpressions": {
                "description": "Set-based requirements, ANDed.",
                "type": "array",
                "items": {
                    "description": "A requirement: a label key, an operator, and values.",
                    "type": "object",
                    "properties": {
                        "key": {
                            "description": "The label key the requirement applies to.",
                            "type": "string",
                        },
                        "operator": {
                            "description": "In, NotIn, Exists or DoesNotExist.",
                            "type": "string",
                        },
                        "values": {
                            "description": "Values for In and NotIn (non-empty); empty for Exists and DoesNotExist.",
                            "type": "array",
                            "items": {"type": "string"},
                            "x-kubernetes-list-type": "atomic",
                        },
                    },
                    "required": ["key", "operator"],
                },
                "x-kubernetes-list-type": "atomic",
            },
            "matchLabels": {
                "description": "Labels that must be present with these values.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
        },
        "x-kubernetes-map-type": "atomic",
    })
}
