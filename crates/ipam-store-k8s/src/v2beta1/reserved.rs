//! `SpiderReservedIP`: IPs never handed out, whatever pool holds them.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A SpiderReservedIP's spec (Go `ReservedIPSpec`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderReservedIP",
    plural = "spiderreservedips",
    shortname = "sr",
    category = "spiderpool",
    derive = "PartialEq",
    doc = "SpiderReservedIP: IPs never handed out, whatever pool holds them.",
    printcolumn(
        name = "VERSION",
        type_ = "string",
        description = "ipVersion",
        json_path = ".spec.ipVersion"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReservedIpSpec {
    /// 4 or 6; derived from the first of `ips` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,
    /// The reserved IPs: addresses or ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}
