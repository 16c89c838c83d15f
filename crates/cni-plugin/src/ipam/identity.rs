//! Who a container is, for the store: the pod identity from `CNI_ARGS`, or one derived from
//! the container id when the runtime is not Kubernetes.

use crate::ipam::ops::DEFAULT_NAMESPACE;
use berth_cni::CniArgs;

/// Prefix of the pod name derived for containers without `K8S_POD_NAME`.
pub const DERIVED_NAME_PREFIX: &str = "ctr-";

/// Longest name the store keeps.
const MAX_NAME: usize = 253;

/// The pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `K8S_POD_NAMESPACE`, else `default`.
    pub namespace: String,
    /// `K8S_POD_NAME`, else [`derived_pod_name`] of the container id.
    pub name: String,
    /// `K8S_POD_UID`; else empty (unknown) for a named pod, the container id for a derived one.
    pub uid: String,
}

impl PodIdentity {
    /// The identity `CNI_ARGS` gives, completed from the container id: plain runtimes such
    /// as podman send no `K8S_*` keys, so each container is then a pod of its own in
    /// namespace `default`, named [`derived_pod_name`], with the container id as uid.
    pub fn of(args: &CniArgs, container_id: &str) -> PodIdentity {
        PodIdentity {
            namespace: args
                .k8s_pod_namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: args
                .k8s_pod_name
                .clone()
                .unwrap_or_else(|| derived_pod_name(container_id)),
            // A named pod whose runtime sends no uid has an unknown one (empty): the
            // container id is no pod's uid, and a cluster agent would refuse the pod as
            // "another incarnation".
            uid: match (&args.k8s_pod_uid, &args.k8s_pod_name) {
                (Some(uid), _) => uid.clone(),
                (None, Some(_)) => String::new(),
                (None, None) => container_id.to_owned(),
            },
        }
    }
}

/// `ctr-<container id>`: the pod name of a container whose runtime names no pod. Stable
/// (ADD, CHECK and DEL of one container agree) and distinct per container id (an id holds
/// only `A-Z a-z 0-9 _ . -`, all storable); cut at 253 bytes, the longest name the store
/// keeps. The prefix keeps it from ever reading as a StatefulSet pod (`<set>-<ordinal>`).
pub fn derived_pod_name(container_id: &str) -> String {
    let mut name = format!("{DERIVED_NAME_PREFIX}{container_id}");
    name.truncate(MAX_NAME);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_identity_is_taken_as_given() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(
            PodIdentity::of(&args, "c1"),
            PodIdentity {
                namespace: "prod".into(),
                name: "web-0".into(),
                uid: "u-1".into()
            }
        );
        // A runtime that names the pod but sends no uid: unknown, never the container id.
        let args = CniArgs::parse("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(PodIdentity::of(&args, "c1").uid, "");
    }

    #[test]
    fn plain_runtimes_get_a_name_from_the_container_id() {
        let id = "4f9e1c0c2b9a7d3e";
        assert_eq!(
            PodIdentity::of(&CniArgs::default(), id),
            PodIdentity {
                namespace: "default".into(),
                name: "ctr-4f9e1c0c2b9a7d3e".into(),
                uid: id.into()
            }
        );
        let long = "a".repeat(300);
        assert_eq!(derived_pod_name(&long).len(), 253);
    }
}
