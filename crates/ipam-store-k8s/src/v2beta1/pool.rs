//! `SpiderIPPool`: the IPs pods get, and who holds each of them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Route, label_selector};

/// A SpiderIPPool's spec (Go `IPPoolSpec`): the IPs it hands out, what pods get with them,
/// and which pods may use it.
// Each `printcolumn(...)` repeats the keys of the others, which clippy takes for a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderIPPool",
    plural = "spiderippools",
    shortname = "sp",
    category = "spiderpool",
    status = "IpPoolStatus",
    derive = "PartialEq",
    doc = "SpiderIPPool: IPs that pods get, and who holds each of them.",
    printcolumn(
        name = "VERSION",
        type_ = "string",
        description = "ipVersion",
        json_path = ".spec.ipVersion"
    ),
    printcolumn(
        name = "SUBNET",
        type_ = "string",
        description = "subnet",
        json_path = ".spec.subnet"
    ),
    printcolumn(
        name = "ALLOCATED-IP-COUNT",
        type_ = "integer",
        description = "allocatedIPCount",
        json_path = ".status.allocatedIPCount"
    ),
    printcolumn(
        name = "TOTAL-IP-COUNT",
        type_ = "integer",
        description = "totalIPCount",
        json_path = ".status.totalIPCount"
    ),
    printcolumn(
        name = "DEFAULT",
        type_ = "boolean",
        description = "default",
        json_path = ".spec.default"
    ),
    // Spiderpool v1.2 shows DISABLE with -o wide only (priority 10). The seed walkthrough, whose
    // `kubectl get spiderippool` listing Berth reproduces, shows it by default, as Spiderpool
    // did before v0.7: so does Berth. Printer columns are no part of the stored objects.
    printcolumn(
        name = "DISABLE",
        type_ = "boolean",
        description = "disable",
        json_path = ".spec.disable"
    ),
    printcolumn(
        name = "NodeName",
        type_ = "string",
        description = "nodeName",
        json_path = ".spec.nodeName",
        priority = 10
    ),
    printcolumn(
        name = "MultusName",
        type_ = "string",
        description = "multusName",
        json_path = ".spec.multusName",
        priority = 10
    ),
    printcolumn(
        name = "APP-NAMESPACE",
        type_ = "string",
        description = "AppNamespace",
        json_path = r".spec.podAffinity.matchLabels['ipam\.spidernet\.io/app\-namespace']",
        priority = 10
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// 4 or 6; derived from `subnet` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,
    /// The CIDR of the pool's IPs (10.6.0.0/16).
    pub subnet: String,
    /// The pool's IPs: addresses or ranges (10.6.168.171-10.6.168.180).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// IPs of `ips` never handed out: addresses or ranges.
    #[serde(default, rename = "excludeIPs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// The gateway given to pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The routes given to pods. Absent (not empty) routes are inherited from the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// Only pods matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub pod_affinity: Option<LabelSelector>,
    /// Only pods in namespaces matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub namespace_affinity: Option<LabelSelector>,
    /// Only pods in these namespaces (takes precedence over `namespaceAffinity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_name: Vec<String>,
    /// Only pods on nodes matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub node_affinity: Option<LabelSelector>,
    /// Only pods on these nodes (takes precedence over `nodeAffinity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_name: Vec<String>,
    /// Only NICs attached through these NetworkAttachmentDefinitions (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multus_name: Vec<String>,
    /// A cluster default pool, used when nothing else selects one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub default: Option<bool>,
    /// No new allocations (releases still work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub disable: Option<bool>,
    /// Deprecated, accepted and dropped: see the subnet's `vlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan: Option<i64>,
}

/// A SpiderIPPool's status (Go `IPPoolStatus`): who holds its IPs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IpPoolStatus {
    /// Who holds each IP: a JSON document in a string, `{"<ip>": {"pod": "<namespace>/<name>",
    /// "podUid": "<uid>"}, ...}`; absent when no IP is held.
    #[serde(
        default,
        rename = "allocatedIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocated_ips: Option<String>,
    /// The number of the pool's IPs (`ips` minus `excludeIPs`).
    #[serde(
        default,
        rename = "totalIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub total_ip_count: Option<i64>,
    /// The number of IPs held by pods.
    #[serde(
        default,
        rename = "allocatedIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub allocated_ip_count: Option<i64>,
    /// Berth's own field, not Spiderpool's: the IP handed out last, where the next allocation
    /// starts looking (round robin, so that a freed IP is not reused at once). Spiderpool's
    /// clients pass over it; under Spiderpool's CRD the API server drops it, and Berth then
    /// starts from the pool's first IP.
    #[serde(
        default,
        rename = "lastAllocatedIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_allocated_ip: Option<String>,
}

/// One value of the `status.allocatedIPs` document (Go `PoolIPAllocation`): what Spiderpool
/// reads of each holder. Berth writes more keys beside these (container id, interface, ...);
/// Spiderpool, like this type, passes over them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolIpAllocation {
    /// `namespace/name` of the pod.
    #[serde(default)]
    pub pod: String,
    /// UID of the pod.
    #[serde(default, rename = "podUid")]
    pub pod_uid: String,
}

impl IpPoolStatus {
    /// The holders of `allocatedIPs`, by IP, read as Spiderpool reads them.
    pub fn allocations(&self) -> Result<BTreeMap<String, PoolIpAllocation>, serde_json::Error> {
        self.allocated_ips
            .as_deref()
            .map_or(Ok(BTreeMap::new()), serde_json::from_str)
    }
}
