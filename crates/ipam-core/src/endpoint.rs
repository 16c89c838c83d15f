//! `SpiderEndpoint`: one per pod, the IPs of each of its NICs.
//!
//! The endpoint is a record for people and for restarts (a StatefulSet pod gets its IPs back
//! from it); ownership itself lives in the pools. It has no spec and no status subresource, as
//! in Spiderpool: the whole object is written by a plain update.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addressing::Route;
use crate::meta::{ObjectMeta, spiderpool_api_version, spiderpool_kind};
use crate::range::IpFamily;

spiderpool_kind! {
    /// A `SpiderEndpoint` (`spiderpool.spidernet.io/v2beta1`, namespaced, named after the pod:
    /// its metadata holds the pod's namespace and name).
    pub struct SpiderEndpoint (kind default "SpiderEndpoint::kind_name") {
        /// What the pod holds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<EndpointStatus>,
    }
}

/// `SpiderEndpoint.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// The current allocation.
    pub current: PodAllocation,
    /// Kind of the pod's top controller (`Deployment`, `StatefulSet`, `Pod`, ...).
    #[serde(default)]
    pub owner_controller_type: String,
    /// Name of the pod's top controller.
    #[serde(default)]
    pub owner_controller_name: String,
}

/// `status.current`: the IPs of one incarnation of the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAllocation {
    /// Pod UID.
    #[serde(default)]
    pub uid: String,
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// One entry per NIC.
    #[serde(default)]
    pub ips: Vec<NicAllocation>,
    /// The CNI container id of this incarnation (Berth's own field).
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
}

/// The IPs of one NIC (`IPAllocationDetail`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicAllocation {
    /// Interface name in the pod.
    pub interface: String,
    /// IPv4 address with the pool subnet's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpNet>,
    /// IPv6 address with the pool subnet's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpNet>,
    /// Pool of the IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_pool: Option<String>,
    /// Pool of the IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_pool: Option<String>,
    /// VLAN (always 0; kept for Spiderpool compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<i64>,
    /// IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<IpAddr>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<IpAddr>,
    /// Whether no default route goes through this NIC's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_gateway: Option<bool>,
    /// Routes of this NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// MAC address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl NicAllocation {
    /// The address of one family.
    pub fn address(&self, f: IpFamily) -> Option<IpNet> {
        match f {
            IpFamily::V4 => self.ipv4,
            IpFamily::V6 => self.ipv6,
        }
    }

    /// The pool of one family.
    pub fn pool(&self, f: IpFamily) -> Option<&str> {
        match f {
            IpFamily::V4 => self.ipv4_pool.as_deref(),
            IpFamily::V6 => self.ipv6_pool.as_deref(),
        }
    }
}

impl SpiderEndpoint {
    /// An endpoint for `namespace/name` with an empty allocation.
    pub fn new(namespace: &str, name: &str) -> Self {
        SpiderEndpoint {
            api_version: spiderpool_api_version(),
            kind: Self::kind_name(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            status: Some(EndpointStatus::default()),
        }
    }

    /// The current allocation (empty when the status is missing).
    pub fn current(&self) -> PodAllocation {
        self.status
            .as_ref()
            .map(|s| s.current.clone())
            .unwrap_or_default()
    }

    /// The entry of one NIC.
    pub fn nic(&self, interface: &str) -> Option<&NicAllocation> {
        self.status
            .as_ref()?
            .current
            .ips
            .iter()
            .find(|n| n.interface == interface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiderpool_endpoint_round_trips() {
        let json = r#"{"apiVersion":"spiderpool.spidernet.io/v2beta1","kind":"SpiderEndpoint",
          "metadata":{"name":"web-0","namespace":"default"},
          "status":{"current":{"uid":"u1","node":"node1","ips":[
              {"interface":"eth0","ipv4":"172.31.199.193/20","ipv4Pool":"p4","vlan":0,
               "ipv4Gateway":"172.31.192.1","cleanGateway":false,
               "routes":[{"dst":"10.0.0.0/8","gw":"172.31.192.2"}]}]},
            "ownerControllerType":"StatefulSet","ownerControllerName":"web"}}"#;
        let e: SpiderEndpoint = serde_json::from_str(json).unwrap();
        assert_eq!(
            e.nic("eth0")
                .unwrap()
                .address(IpFamily::V4)
                .unwrap()
                .to_string(),
            "172.31.199.193/20"
        );
        assert_eq!(e.nic("eth0").unwrap().pool(IpFamily::V4), Some("p4"));
        assert!(e.nic("net1").is_none());
        let back = serde_json::to_value(&e).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }
}
