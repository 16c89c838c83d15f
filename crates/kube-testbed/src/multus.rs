//! What Multus does for the kubelet stand-in: a pod's NICs from its annotations and the
//! NetworkAttachmentDefinitions they name, each NIC's IPAM plugin called with the network's
//! own configuration.
//!
//! - `v1.multus-cni.io/default-network: NS/NAME` is the primary NIC, `eth0`;
//! - `k8s.v1.cni.cncf.io/networks` adds `net1`, `net2`, ... in order: a comma-separated list
//!   of `[NS/]NAME[@IFNAME]`, or Multus' JSON list of `{"name", "namespace", "interface"}`.
//!
//! A network's `spec.config` is a CNI configuration or configuration list. The stand-in makes
//! no NICs, so of each network it runs only the IPAM plugin, the way the main plugin delegates
//! to it: the plugin with an `ipam` section (the list's `cniVersion` and `name` added), on its
//! stdin. Which executable serves an IPAM `type` on a node is the caller's choice
//! ([`Multus::new`]): a node's `/opt/cni/bin`, one directory per simulated node.
//!
//! [`NAD_CRD`] is a minimal NetworkAttachmentDefinition CRD (Multus' own, without its schema
//! details), for a control plane that has none.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::cni::{Attachment, PodNetwork};

/// The annotation naming a pod's primary network.
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// The annotation listing a pod's further networks.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// A minimal `network-attachment-definitions.k8s.cni.cncf.io` CRD: `spec.config`, a string.
pub const NAD_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: network-attachment-definitions.k8s.cni.cncf.io
spec:
  group: k8s.cni.cncf.io
  scope: Namespaced
  names:
    plural: network-attachment-definitions
    singular: network-attachment-definition
    kind: NetworkAttachmentDefinition
    shortNames: [net-attach-def]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              config:
                type: string
"#;

/// A NetworkAttachmentDefinition holding `config` (a CNI configuration as JSON text), as YAML
/// for `kubectl apply`.
pub fn nad_yaml(namespace: &str, name: &str, config: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"config": config},
    }))
    .expect("JSON is YAML")
}

/// Chooses the executable of an IPAM `type` on a node: `(node, type) -> path`.
pub type IpamPlugins = dyn Fn(&str, &str) -> PathBuf + Send + Sync;

/// Pods' NICs from their Multus annotations (see the module docs).
pub struct Multus {
    client: kube::Client,
    plugins: Arc<IpamPlugins>,
    /// Networks read so far: `namespace/name` → the IPAM plugin's configuration.
    cache: Mutex<HashMap<String, Value>>,
}

impl Multus {
    /// Reads networks through `client`; `plugins(node, type)` is the IPAM executable.
    pub fn new(
        client: kube::Client,
        plugins: impl Fn(&str, &str) -> PathBuf + Send + Sync + 'static,
    ) -> Self {
        Multus {
            client,
            plugins: Arc::new(plugins),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The IPAM plugin's configuration of network `namespace/name`, read once.
    async fn network(&self, namespace: &str, name: &str) -> Result<Value, String> {
        let key = format!("{namespace}/{name}");
        if let Some(config) = self.cache.lock().expect("cache").get(&key) {
            return Ok(config.clone());
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &nad_resource());
        let nad = api
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read NetworkAttachmentDefinition {key}: {e}"))?
            .ok_or_else(|| format!("NetworkAttachmentDefinition {key} does not exist"))?;
        let text = nad.data["spec"]["config"]
            .as_str()
            .ok_or_else(|| format!("NetworkAttachmentDefinition {key} has no spec.config"))?;
        let config = ipam_config(text).map_err(|e| format!("{key}: {e}"))?;
        self.cache
            .lock()
            .expect("cache")
            .insert(key, config.clone());
        Ok(config)
    }
}

fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

/// Of a configuration or configuration list, the plugin that delegates to an IPAM plugin,
/// with the list's `cniVersion` and `name`: what that IPAM plugin reads on its stdin.
pub fn ipam_config(text: &str) -> Result<Value, String> {
    let config: Value =
        serde_json::from_str(text).map_err(|e| format!("spec.config is not JSON: {e}"))?;
    let mut plugin = match config.get("plugins").and_then(Value::as_array) {
        Some(plugins) => plugins
            .iter()
            .find(|p| p.get("ipam").is_some())
            .cloned()
            .ok_or("no plugin of the list has an ipam section")?,
        None => config.clone(),
    };
    if plugin["ipam"]["type"].as_str().is_none() {
        return Err("the ipam section has no type".into());
    }
    for field in ["cniVersion", "name"] {
        if let Some(v) = config.get(field) {
            plugin[field] = v.clone();
        }
    }
    Ok(plugin)
}

/// A pod's networks in NIC order: `(namespace, name, interface)`.
pub fn pod_networks(pod: &Pod) -> Result<Vec<(String, String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let split = |reference: &str| match reference.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), reference.to_string()),
    };
    let mut out = Vec::new();
    if let Some(primary) = annotations.get(DEFAULT_NETWORK) {
        let (ns, name) = split(primary.trim());
        out.push((ns, name, "eth0".to_string()));
    }
    if let Some(list) = annotations.get(NETWORKS) {
        let list = list.trim();
        let items: Vec<(String, String, Option<String>)> = if list.starts_with('[') {
            let parsed: Vec<Value> = serde_json::from_str(list)
                .map_err(|e| format!("annotation {NETWORKS} is not a JSON list: {e}"))?;
            parsed
                .iter()
                .map(|v| {
                    let name = v["name"]
                        .as_str()
                        .ok_or_else(|| format!("annotation {NETWORKS}: an item has no name"))?;
                    Ok((
                        v["namespace"].as_str().unwrap_or(namespace).to_string(),
                        name.to_string(),
                        v["interface"].as_str().map(str::to_string),
                    ))
                })
                .collect::<Result<_, String>>()?
        } else {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|item| {
                    let (reference, interface) = match item.split_once('@') {
                        Some((r, i)) => (r, Some(i.to_string())),
                        None => (item, None),
                    };
                    let (ns, name) = split(reference);
                    (ns, name, interface)
                })
                .collect()
        };
        for (i, (ns, name, interface)) in items.into_iter().enumerate() {
            out.push((
                ns,
                name,
                interface.unwrap_or_else(|| format!("net{}", i + 1)),
            ));
        }
    }
    if out.is_empty() {
        return Err(format!(
            "the pod names no network ({DEFAULT_NETWORK} or {NETWORKS})"
        ));
    }
    Ok(out)
}

#[async_trait]
impl PodNetwork for Multus {
    async fn attachments(&self, node: &str, pod: &Pod) -> Result<Vec<Attachment>, String> {
        let mut out = Vec::new();
        for (namespace, name, interface) in pod_networks(pod)? {
            let config = self.network(&namespace, &name).await?;
            let ipam_type = config["ipam"]["type"].as_str().unwrap_or_default();
            out.push(Attachment {
                network: format!("{namespace}/{name}"),
                interface,
                plugin: (self.plugins)(node, ipam_type),
                config,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("apps".into());
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod
    }

    #[test]
    fn networks_in_nic_order() {
        let seed = pod(&[
            (DEFAULT_NETWORK, "kube-system/macvlan-conf-ens192"),
            (NETWORKS, "kube-system/macvlan-conf-ens224"),
        ]);
        assert_eq!(
            pod_networks(&seed).unwrap(),
            vec![
                (
                    "kube-system".into(),
                    "macvlan-conf-ens192".into(),
                    "eth0".into()
                ),
                (
                    "kube-system".into(),
                    "macvlan-conf-ens224".into(),
                    "net1".into()
                ),
            ]
        );
        let listed = pod(&[(NETWORKS, "a@data0, other/b")]);
        assert_eq!(
            pod_networks(&listed).unwrap(),
            vec![
                ("apps".into(), "a".into(), "data0".into()),
                ("other".into(), "b".into(), "net2".into()),
            ]
        );
        let json = pod(&[(
            NETWORKS,
            r#"[{"name":"a"},{"name":"b","namespace":"x","interface":"n9"}]"#,
        )]);
        assert_eq!(
            pod_networks(&json).unwrap(),
            vec![
                ("apps".into(), "a".into(), "net1".into()),
                ("x".into(), "b".into(), "n9".into()),
            ]
        );
        assert!(pod_networks(&pod(&[])).is_err());
        assert!(pod_networks(&pod(&[(NETWORKS, "[{")])).is_err());
    }

    #[test]
    fn the_delegating_plugin_of_a_list() {
        let seed = include_str!("../../../examples/seed/macvlan-conf-ens192.json");
        let config = ipam_config(seed).unwrap();
        assert_eq!(config["type"], "macvlan");
        assert_eq!(config["ipam"]["type"], "spiderpool");
        assert_eq!(config["cniVersion"], "0.3.1");
        assert_eq!(config["name"], "macvlan-conf-ens192");
        assert!(ipam_config(r#"{"plugins":[{"type":"veth"}]}"#).is_err());
        assert!(ipam_config("nope").is_err());
    }
}
