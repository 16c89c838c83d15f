//! The JSON messages of the agent protocol; the endpoints are listed in [`crate::agent`].
//!
//! The IPAM messages keep the field names of Spiderpool's agent API (`IpamAddArgs`,
//! `IpamAddResponse`, `IpamDelArgs`: camelCase, `containerID`, `podUID`, …) and add Berth's
//! own fields next to them (`network`, `owner`, `node`), each optional.

use std::net::IpAddr;

use ipam_core::{Kind, LabelSelector, ObjectKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use berth_cni::config::GcAttachment;

use crate::ipam::probe::Detection;
use crate::owner::Owner;
use berth_cni::result::{CniResult, IpConfig, Route};

/// `GET`: 200 when the agent and its store answer.
pub const PATH_HEALTHY: &str = "/v1/ipam/healthy";
/// `POST` [`AddArgs`] → [`AddResponse`]; `DELETE` [`DelArgs`] → [`DelResponse`].
pub const PATH_IP: &str = "/v1/ipam/ip";
/// `POST` [`CheckArgs`] → `{}`.
pub const PATH_CHECK: &str = "/v1/ipam/check";
/// `POST` [`NetworkGcArgs`] → [`GcResponse`] (CNI 1.1 GC of one network).
pub const PATH_NETWORK_GC: &str = "/v1/ipam/gc";
/// `POST` `{}` → [`GcResponse`] (`berth gc`: every allocation whose netns is gone).
pub const PATH_GC: &str = "/v1/gc";
/// `POST` [`GetArgs`] → [`ObjectResponse`].
pub const PATH_STORE_GET: &str = "/v1/store/get";
/// `POST` [`ListArgs`] → [`ListResponse`].
pub const PATH_STORE_LIST: &str = "/v1/store/list";
/// `POST` [`WriteArgs`] → [`ObjectResponse`].
pub const PATH_STORE_CREATE: &str = "/v1/store/create";
/// `POST` [`WriteArgs`] → [`ObjectResponse`].
pub const PATH_STORE_UPDATE: &str = "/v1/store/update";
/// `POST` [`WriteArgs`] → [`ObjectResponse`].
pub const PATH_STORE_UPDATE_STATUS: &str = "/v1/store/update-status";
/// `POST` [`DeleteArgs`] → [`DeleteResponse`].
pub const PATH_STORE_DELETE: &str = "/v1/store/delete";

/// ADD of one NIC (`POST /v1/ipam/ip`): Spiderpool's `IpamAddArgs` plus Berth's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddArgs {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_NETNS`.
    #[serde(default)]
    pub net_namespace: String,
    /// The pod's namespace (`default` when empty).
    #[serde(default)]
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    #[serde(rename = "podUID", default)]
    pub pod_uid: String,
    /// `default_ipv4_ippool` of the CNI config.
    #[serde(
        rename = "defaultIPv4IPPool",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv4_ippool: Vec<String>,
    /// `default_ipv6_ippool` of the CNI config.
    #[serde(
        rename = "defaultIPv6IPPool",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv6_ippool: Vec<String>,
    /// `clean_gateway` of the CNI config: no default route through this NIC.
    #[serde(default)]
    pub clean_gateway: bool,
    /// Berth: the CNI network `name`, recorded with the IPs (CNI GC is per network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Berth: `BERTH_OWNER`, `<Kind>/<name>` of a workload registered in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Berth: the node name; the agent's host name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The answer to ADD: Spiderpool's `IpamAddResponse` for one NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResponse {
    /// One address per IP family.
    #[serde(default)]
    pub ips: Vec<IpAddress>,
    /// The routes of this NIC, the default route via the gateway first (unless
    /// `cleanGateway`).
    #[serde(default)]
    pub routes: Vec<NicRoute>,
}

/// One address of an [`AddResponse`] (Spiderpool's `IpConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// 4 or 6.
    pub version: u8,
    /// The address with the pool subnet's prefix length.
    pub address: IpNet,
    /// The pod interface.
    pub nic: String,
    /// The pool it came from.
    #[serde(rename = "ipPool", default)]
    pub ip_pool: String,
    /// The pool's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Spiderpool's `enableIPConflictDetection`: the agent's default for probing this
    /// address; the network's `enable_ip_conflict_detection` overrides it.
    #[serde(
        rename = "enableIPConflictDetection",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub enable_ip_conflict_detection: bool,
    /// Spiderpool's `enableGatewayDetection`: the agent's default for asking this address's
    /// gateway; the network's `enable_gateway_detection` overrides it.
    #[serde(
        rename = "enableGatewayDetection",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub enable_gateway_detection: bool,
}

/// One route of an [`AddResponse`] (Spiderpool's `Route`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicRoute {
    /// The pod interface.
    pub if_name: String,
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: IpAddr,
}

impl AddResponse {
    /// The answer with the agent's detection defaults marked on every address.
    pub fn with_detection(mut self, defaults: Detection) -> Self {
        for ip in &mut self.ips {
            ip.enable_ip_conflict_detection = defaults.ip_conflict;
            ip.enable_gateway_detection = defaults.gateway;
        }
        self
    }

    /// The abbreviated CNI result of an IPAM plugin for the interface `ifname`: its
    /// addresses with their gateways and its routes (entries of other NICs are left out, as
    /// Spiderpool's plugin does); no interfaces, no DNS.
    pub fn to_cni_result(&self, ifname: &str) -> CniResult {
        CniResult {
            ips: self
                .ips
                .iter()
                .filter(|ip| ip.nic == ifname)
                .map(|ip| IpConfig {
                    address: ip.address,
                    gateway: ip.gateway,
                    interface: None,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .filter(|r| r.if_name == ifname)
                .map(|r| Route::new(r.dst, Some(r.gw)))
                .collect(),
            ..CniResult::default()
        }
    }
}

/// DEL of one NIC (`DELETE /v1/ipam/ip`): Spiderpool's `IpamDelArgs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelArgs {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// `CNI_NETNS`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_namespace: Option<String>,
    /// The pod's namespace (`default` when empty).
    #[serde(default)]
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's uid.
    #[serde(rename = "podUID", default)]
    pub pod_uid: String,
}

/// What DEL of one NIC did (the answer of `DELETE /v1/ipam/ip`; agents before it answered
/// `{}`, which reads as nothing released).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelResponse {
    /// IPs freed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<ReleasedIp>,
    /// IPs detached from the container but kept for its StatefulSet pod name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_for_statefulset: Vec<ReleasedIp>,
}

/// CHECK of one NIC (`POST /v1/ipam/check`): the container must still hold `ips` on
/// `ifName` (or, when `ips` is empty, at least one IP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckArgs {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
    /// The pod's namespace.
    #[serde(default)]
    pub pod_namespace: String,
    /// The pod's name.
    #[serde(default)]
    pub pod_name: String,
    /// The addresses of `prevResult`.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// CNI 1.1 GC of one network (`POST /v1/ipam/gc`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkGcArgs {
    /// The CNI network `name`.
    pub network: String,
    /// `cni.dev/valid-attachments`; `None` (key absent) releases nothing.
    #[serde(default)]
    pub valid_attachments: Option<Vec<GcAttachment>>,
}

/// What a GC released.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    /// IPs freed.
    #[serde(default)]
    pub released: Vec<ReleasedIp>,
    /// IPs detached from their container but kept for a StatefulSet pod name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_for_statefulset: Vec<ReleasedIp>,
}

/// One IP a GC released (or kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedIp {
    /// The pool.
    pub pool: String,
    /// The IP.
    pub ip: IpAddr,
    /// `namespace/name` of the pod that held it.
    #[serde(default)]
    pub pod: String,
}

/// The answer of `GET /v1/ipam/healthy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthy {
    /// `"ok"`.
    pub status: String,
}

/// `Store::get` (`POST /v1/store/get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetArgs {
    /// The object.
    pub key: ObjectKey,
}

/// `Store::list` (`POST /v1/store/list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListArgs {
    /// The kind.
    pub kind: Kind,
    /// Only this namespace (namespaced kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `Store::create`, `update`, `update_status` (`POST /v1/store/{create,update,update-status}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteArgs {
    /// The kind.
    pub kind: Kind,
    /// The object.
    pub object: Value,
}

/// `Store::delete` (`POST /v1/store/delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteArgs {
    /// The object.
    pub key: ObjectKey,
    /// The version the stored object must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<String>,
}

/// One object, or `null` (get of a missing key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectResponse {
    /// The object as stored.
    pub object: Option<Value>,
}

/// Objects of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The objects, ordered by namespace and name.
    pub items: Vec<Value>,
}

/// What a delete did: `{"deleted": "gone"}` or `{"deleted": "terminating", "object": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "deleted", rename_all = "lowercase")]
pub enum DeleteResponse {
    /// The object is gone.
    Gone,
    /// Finalizers hold it.
    Terminating {
        /// The object, terminating.
        object: Value,
    },
}

/// A store error on the wire (any non-2xx answer of a `/v1/store/*` endpoint), tagged by
/// `error` with the `ipam_core::Error` variant it stands for; `message` is its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error")]
pub enum StoreError {
    /// `Error::NotFound` (HTTP 404).
    NotFound {
        /// The key.
        key: ObjectKey,
        /// The error's text.
        message: String,
    },
    /// `Error::AlreadyExists` (HTTP 409).
    AlreadyExists {
        /// The key.
        key: ObjectKey,
        /// The error's text.
        message: String,
    },
    /// `Error::Conflict` (HTTP 409).
    Conflict {
        /// The key.
        key: ObjectKey,
        /// The error's text.
        message: String,
    },
    /// `Error::RetriesExhausted` (HTTP 409).
    RetriesExhausted {
        /// The key.
        key: ObjectKey,
        /// Attempts made.
        attempts: u32,
        /// The error's text.
        message: String,
    },
    /// `Error::Malformed` (HTTP 422).
    Malformed {
        /// The kind.
        kind: Kind,
        /// The object's name.
        name: String,
        /// The decoder's message.
        reason: String,
        /// The error's text.
        message: String,
    },
    /// Anything else, read back as `Error::Backend` (HTTP 500 or 400).
    Backend {
        /// The error's text.
        message: String,
    },
}

/// A Backend error read back from the wire: its text only.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(pub String);

impl StoreError {
    /// The wire form of a store error.
    pub fn from_error(err: &ipam_core::Error) -> StoreError {
        use ipam_core::Error as E;
        let message = err.to_string();
        match err {
            E::NotFound(k) => StoreError::NotFound {
                key: k.clone(),
                message,
            },
            E::AlreadyExists(k) => StoreError::AlreadyExists {
                key: k.clone(),
                message,
            },
            E::Conflict(k) => StoreError::Conflict {
                key: k.clone(),
                message,
            },
            E::RetriesExhausted { key, attempts } => StoreError::RetriesExhausted {
                key: key.clone(),
                attempts: *attempts,
                message,
            },
            E::Malformed { kind, name, reason } => StoreError::Malformed {
                kind: *kind,
                name: name.clone(),
                reason: reason.clone(),
                message,
            },
            _ => StoreError::Backend {
                message: berth_cni::error::chain(err),
            },
        }
    }

    /// The HTTP status the agent answers it with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            StoreError::NotFound { .. } => http::StatusCode::NOT_FOUND,
            StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. }
            | StoreError::RetriesExhausted { .. } => http::StatusCode::CONFLICT,
            StoreError::Malformed { .. } => http::StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Backend { .. } => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `ipam_core::Error` it stands for (same variant; `Backend` carries the text).
    pub fn into_error(self, context: &str) -> ipam_core::Error {
        use ipam_core::Error as E;
        match self {
            StoreError::NotFound { key, .. } => E::NotFound(key),
            StoreError::AlreadyExists { key, .. } => E::AlreadyExists(key),
            StoreError::Conflict { key, .. } => E::Conflict(key),
            StoreError::RetriesExhausted { key, attempts, .. } => {
                E::RetriesExhausted { key, attempts }
            }
            StoreError::Malformed {
                kind, name, reason, ..
            } => E::Malformed { kind, name, reason },
            StoreError::Backend { message } => E::backend(context.to_owned(), RemoteError(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_args_use_spiderpool_names() {
        let a = AddArgs {
            container_id: "c1".into(),
            if_name: "eth0".into(),
            net_namespace: "/var/run/netns/p".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            default_ipv4_ippool: vec!["pool-a".into()],
            clean_gateway: true,
            network: Some("macvlan-conf-ens192".into()),
            owner: Some("Deployment/test-app".parse().unwrap()),
            ..AddArgs::default()
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            json!({
                "containerID": "c1", "ifName": "eth0", "netNamespace": "/var/run/netns/p",
                "podNamespace": "default", "podName": "p", "podUID": "u",
                "defaultIPv4IPPool": ["pool-a"], "cleanGateway": true,
                "network": "macvlan-conf-ens192", "owner": "Deployment/test-app"
            })
        );
        assert_eq!(serde_json::from_value::<AddArgs>(v).unwrap(), a);
    }

    #[test]
    fn add_response_becomes_an_ipam_result() {
        let r: AddResponse = serde_json::from_value(json!({
            "ips": [{"version": 4, "address": "10.6.168.171/16", "nic": "eth0",
                     "ipPool": "auto4-test-app-eth0-1a2b3", "gateway": "10.6.0.1"}],
            "routes": [{"ifName": "eth0", "dst": "0.0.0.0/0", "gw": "10.6.0.1"},
                       {"ifName": "net1", "dst": "0.0.0.0/0", "gw": "10.7.0.1"}]
        }))
        .unwrap();
        assert_eq!(
            r.to_cni_result("eth0").to_value(berth_cni::Version::V0_3_1),
            json!({
                "cniVersion": "0.3.1",
                "ips": [{"version": "4", "address": "10.6.168.171/16", "gateway": "10.6.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.6.0.1"}]
            })
        );
    }

    #[test]
    fn store_errors_round_trip() {
        use ipam_core::Error as E;
        let key = ObjectKey::namespaced(Kind::SpiderEndpoint, "default", "p");
        for err in [
            E::NotFound(key.clone()),
            E::AlreadyExists(key.clone()),
            E::Conflict(key.clone()),
            E::RetriesExhausted {
                key: key.clone(),
                attempts: 3,
            },
            E::Malformed {
                kind: Kind::SpiderIPPool,
                name: "p".into(),
                reason: "bad".into(),
            },
        ] {
            let wire = StoreError::from_error(&err);
            let json = serde_json::to_string(&wire).unwrap();
            let back: StoreError = serde_json::from_str(&json).unwrap();
            let back = back.into_error("ctx");
            assert_eq!(back.to_string(), err.to_string(), "{json}");
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&err),
                "{json}"
            );
        }
        let backend = E::backend("write x", std::io::Error::other("disk full"));
        let wire = StoreError::from_error(&backend);
        assert_eq!(wire.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let back = wire.into_error("call the agent");
        assert!(matches!(back, E::Backend { .. }));
        assert_eq!(
            back.to_string(),
            "store: call the agent",
            "the remote text is the source"
        );
        assert_eq!(
            std::error::Error::source(&back).unwrap().to_string(),
            "store: write x: disk full"
        );
        assert_eq!(
            serde_json::to_value(DeleteResponse::Gone).unwrap(),
            json!({"deleted": "gone"})
        );
    }
}
