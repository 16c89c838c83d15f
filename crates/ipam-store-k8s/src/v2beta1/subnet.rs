//! `SpiderSubnet`: a subnet, and which of its IPs each pool holds.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Route;

/// A SpiderSubnet's spec (Go `SubnetSpec`): the IPs its pools may take, and what their pods get.
// Each `printcolumn(...)` repeats the keys of the others, which clippy takes for a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderSubnet",
    plural = "spidersubnets",
    shortname = "ss",
    category = "spiderpool",
    status = "SubnetStatus",
    derive = "PartialEq",
    doc = "SpiderSubnet: a subnet, and the IPs its pools may be carved from.",
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
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// 4 or 6; derived from `subnet` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,
    /// The subnet's CIDR (10.6.0.0/16).
    pub subnet: String,
    /// The IPs pools may take: addresses or ranges (10.6.168.171-10.6.168.180).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// IPs of `ips` never given to a pool: addresses or ranges.
    #[serde(default, rename = "excludeIPs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// The gateway, inherited by the subnet's pools that have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Routes, inherited by the subnet's pools that have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// Deprecated, accepted and dropped: the VLAN id Spiderpool before v0.7 kept here (the seed's
    /// YAML still sets `vlan: 0`, and `kubectl apply` refuses an unknown field). Berth's
    /// admission, like `berth apply`, removes it; the VLAN belongs to the NIC's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan: Option<i64>,
}

/// A SpiderSubnet's status (Go `SubnetStatus`): which of its IPs each pool holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubnetStatus {
    /// Which IPs each pool holds: a JSON document in a string, `{"<pool>": {"ips": [<ranges>],
    /// "application": "<group>_<version>_<Kind>_<namespace>_<name>"}, ...}` (`application` for
    /// auto pools only); absent when no pool holds any.
    #[serde(
        default,
        rename = "controlledIPPools",
        skip_serializing_if = "Option::is_none"
    )]
    pub controlled_ip_pools: Option<String>,
    /// The number of the subnet's IPs (`ips` minus `excludeIPs`).
    #[serde(
        default,
        rename = "totalIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub total_ip_count: Option<i64>,
    /// The number of IPs given to pools.
    #[serde(
        default,
        rename = "allocatedIPCount",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0))]
    pub allocated_ip_count: Option<i64>,
}

/// One value of the `status.controlledIPPools` document (Go `PoolIPPreAllocation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolIpPreAllocation {
    /// The IPs the pool holds: addresses or ranges.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The application of an auto pool, `<group>_<version>_<Kind>_<namespace>_<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

impl SubnetStatus {
    /// The pools of `controlledIPPools` and their IPs, read as Spiderpool reads them.
    pub fn controlled_pools(
        &self,
    ) -> Result<BTreeMap<String, PoolIpPreAllocation>, serde_json::Error> {
        self.controlled_ip_pools
            .as_deref()
            .map_or(Ok(BTreeMap::new()), serde_json::from_str)
    }
}
