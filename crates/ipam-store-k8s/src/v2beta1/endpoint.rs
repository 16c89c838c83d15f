//! `SpiderEndpoint`: one per pod, the IPs of each of its NICs.
//!
//! Written by hand: the object has a `status` and no `spec`, and that status is no subresource
//! (a plain update writes it), which kube's `CustomResource` derive cannot say.

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::crd::v1::CustomResourceExt;
use kube::core::{ApiResource, NamespaceResourceScope, Resource};
use schemars::JsonSchema;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use super::{API_VERSION, CATEGORY, GROUP, Route, VERSION};

/// SpiderEndpoint: the IPs of one pod's NICs, named and namespaced after the pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
pub struct SpiderEndpoint {
    /// Metadata.
    #[schemars(skip)]
    pub metadata: ObjectMeta,
    /// What the pod holds. Spiderpool always writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkloadEndpointStatus>,
}

impl Serialize for SpiderEndpoint {
    /// With `apiVersion` and `kind`, as kube's derived kinds serialize.
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut obj = ser.serialize_struct("SpiderEndpoint", 4)?;
        obj.serialize_field("apiVersion", API_VERSION)?;
        obj.serialize_field("kind", "SpiderEndpoint")?;
        obj.serialize_field("metadata", &self.metadata)?;
        if let Some(status) = &self.status {
            obj.serialize_field("status", status)?;
        } else {
            obj.skip_field("status")?;
        }
        obj.end()
    }
}

impl SpiderEndpoint {
    /// An endpoint for the pod `namespace/name`.
    pub fn new(namespace: &str, name: &str, status: WorkloadEndpointStatus) -> Self {
        SpiderEndpoint {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            status: Some(status),
        }
    }
}

/// A SpiderEndpoint's status (Go `WorkloadEndpointStatus`): the pod's IPs and its controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointStatus {
    /// The IPs of the pod's current incarnation.
    pub current: PodIpAllocation,
    /// The kind of the pod's top controller (`Deployment`, `StatefulSet`, `Pod`, ...).
    pub owner_controller_type: String,
    /// The name of the pod's top controller.
    pub owner_controller_name: String,
}

/// The IPs of one incarnation of a pod (Go `PodIPAllocation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodIpAllocation {
    /// The pod's UID.
    pub uid: String,
    /// The pod's node.
    pub node: String,
    /// One entry per NIC.
    pub ips: Vec<IpAllocationDetail>,
    /// Berth's own field, not Spiderpool's: the CNI container id of this incarnation, by which
    /// a retried ADD finds its IPs. Spiderpool's clients pass over it; under Spiderpool's CRD
    /// the API server drops it.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
}

/// The IPs of one NIC, and what the pod got with them (Go `IPAllocationDetail`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpAllocationDetail {
    /// The interface in the pod (`eth0`).
    pub interface: String,
    /// The IPv4 address with the prefix length of its pool's subnet (10.6.168.172/16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// The IPv6 address with the prefix length of its pool's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// The pool of the IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_pool: Option<String>,
    /// The pool of the IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_pool: Option<String>,
    /// The VLAN (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0), range(min = 0, max = 4094))]
    pub vlan: Option<i64>,
    /// The IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<String>,
    /// The IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,
    /// No default route through this NIC's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_gateway: Option<bool>,
    /// The routes of this NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// The MAC address of the interface, when an external system (a cloud provider) assigned
    /// it with the IPs: `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Resource for SpiderEndpoint {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "SpiderEndpoint".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        API_VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "spiderendpoints".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A printer column of `.status.current` (Spiderpool shows the first NIC's).
fn column(name: &str, description: &str, json_path: &str) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: "string".into(),
        description: Some(description.into()),
        json_path: json_path.into(),
        ..Default::default()
    }
}

impl CustomResourceExt for SpiderEndpoint {
    /// The CRD as kube's derive would write it for a namespaced kind without spec and without
    /// a status subresource ([`crate::crds::all`] finishes it as it does the others).
    fn crd() -> CustomResourceDefinition {
        CustomResourceDefinition {
            metadata: ObjectMeta {
                name: Some(Self::crd_name().into()),
                ..Default::default()
            },
            spec: CustomResourceDefinitionSpec {
                group: GROUP.into(),
                names: CustomResourceDefinitionNames {
                    categories: Some(vec![CATEGORY.into()]),
                    kind: "SpiderEndpoint".into(),
                    plural: "spiderendpoints".into(),
                    short_names: Some(vec!["se".into()]),
                    singular: Some("spiderendpoint".into()),
                    ..Default::default()
                },
                scope: "Namespaced".into(),
                versions: vec![CustomResourceDefinitionVersion {
                    additional_printer_columns: Some(vec![
                        column("INTERFACE", "interface", ".status.current.ips[0].interface"),
                        column("IPV4POOL", "ipv4Pool", ".status.current.ips[0].ipv4Pool"),
                        column("IPV4", "ipv4", ".status.current.ips[0].ipv4"),
                        column("IPV6POOL", "ipv6Pool", ".status.current.ips[0].ipv6Pool"),
                        column("IPV6", "ipv6", ".status.current.ips[0].ipv6"),
                        column("NODE", "node", ".status.current.node"),
                    ]),
                    name: VERSION.into(),
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(crate::crds::schema_for::<Self>()),
                    }),
                    served: true,
                    storage: true,
                    subresources: None,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn crd_name() -> &'static str {
        "spiderendpoints.spiderpool.spidernet.io"
    }

    fn api_resource() -> ApiResource {
        ApiResource::erase::<Self>(&())
    }

    fn shortnames() -> &'static [&'static str] {
        &["se"]
    }
}
