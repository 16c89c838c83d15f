//! The seed's network in namespaces, and CNI chains run as libcni runs them.
//!
//! - [`SeedTopology`]: a node with `ens192` / `ens224`, a gateway routing both pod subnets and
//!   a client subnet with strict reverse-path filtering, and an outside client;
//! - [`Chain`]: a network config list run the way libcni runs it (each plugin with the
//!   previous result, DEL in reverse, CHECK with the cached result), every plugin executed
//!   inside the node's namespace like a runtime on that node would.
//!
//! Nothing here touches the root namespace: every address, route, sysctl and iptables rule
//! is made inside a namespace the testbed created.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::netns::Ns;
use crate::plugin::{self, Outcome};

/// Addresses of [`SeedTopology`] (the seed's, plus IPv6 and an outside client subnet).
pub mod addr {
    /// The node's address on `ens192` (the seed's host IP).
    pub const NODE_ENS192: &str = "10.6.168.123";
    /// The node's address on `ens224`.
    pub const NODE_ENS224: &str = "10.7.168.123";
    /// The node's IPv6 address on `ens192`.
    pub const NODE_ENS192_V6: &str = "fd00:6::123";
    /// The node's IPv6 address on `ens224`.
    pub const NODE_ENS224_V6: &str = "fd00:7::123";
    /// The gateway of the `ens192` subnet 10.6.0.0/16.
    pub const GW_192: &str = "10.6.0.1";
    /// The gateway of the `ens224` subnet 10.7.0.0/16.
    pub const GW_224: &str = "10.7.0.1";
    /// IPv6 gateway of fd00:6::/64.
    pub const GW_192_V6: &str = "fd00:6::1";
    /// IPv6 gateway of fd00:7::/64.
    pub const GW_224_V6: &str = "fd00:7::1";
    /// The outside client, in neither pod subnet.
    pub const CLIENT: &str = "10.9.0.10";
    /// The outside client's IPv6 address.
    pub const CLIENT_V6: &str = "fd00:9::10";
    /// The seed's service CIDR.
    pub const SERVICE_CIDR: &str = "10.96.0.0/12";
    /// An IPv6 service CIDR.
    pub const SERVICE_CIDR_V6: &str = "fd00:96::/108";
    /// A ClusterIP in the service CIDR, DNATed on the node.
    pub const CLUSTER_IP: &str = "10.96.0.10";
    /// An IPv6 ClusterIP.
    pub const CLUSTER_IP_V6: &str = "fd00:96::10";
}

/// The seed's network, in namespaces:
///
/// ```text
///  client 10.9.0.10 ── gw (10.9.0.1 | 10.6.0.1 lan192 | 10.7.0.1 lan224, rp_filter=1)
///                           │ lan192                 │ lan224
///                      ens192 10.6.168.123      ens224 10.7.168.123     (node)
///                        └ macvlan eth0 of pods   └ macvlan net1 of pods
/// ```
///
/// `ens192` and `ens224` are veth ends (this kernel has no dummy links); pods are
/// macvlan children of them in bridge mode. The gateway forwards between its three links
/// with strict reverse-path filtering (`rp_filter=1`; for IPv6 the `rpfilter` match in
/// `ip6tables -t raw`), so a reply leaving a pod by the wrong NIC is dropped there.
#[derive(Debug)]
pub struct SeedTopology {
    /// The node (where plugins run).
    pub node: Ns,
    /// The router of both pod subnets and the client subnet.
    pub gateway: Ns,
    /// The outside client.
    pub client: Ns,
    /// Whether IPv6 addresses were added too.
    pub dual_stack: bool,
}

impl SeedTopology {
    /// Builds it; `dual_stack` adds the IPv6 addresses and routes.
    pub fn new(dual_stack: bool) -> SeedTopology {
        use addr::*;
        let t = SeedTopology {
            node: Ns::new("node"),
            gateway: Ns::new("gw"),
            client: Ns::new("client"),
            dual_stack,
        };
        let (node, gw, client) = (&t.node, &t.gateway, &t.client);
        for (parent, lan, node4, node6, gw4, gw6) in [
            (
                "ens192",
                "lan192",
                NODE_ENS192,
                NODE_ENS192_V6,
                GW_192,
                GW_192_V6,
            ),
            (
                "ens224",
                "lan224",
                NODE_ENS224,
                NODE_ENS224_V6,
                GW_224,
                GW_224_V6,
            ),
        ] {
            node.ip(&[
                "link",
                "add",
                parent,
                "type",
                "veth",
                "peer",
                "name",
                lan,
                "netns",
                gw.name(),
            ]);
            node.ip(&["addr", "add", &format!("{node4}/16"), "dev", parent]);
            gw.ip(&["addr", "add", &format!("{gw4}/16"), "dev", lan]);
            if dual_stack {
                node.ip(&["addr", "add", &format!("{node6}/64"), "dev", parent]);
                gw.ip(&["addr", "add", &format!("{gw6}/64"), "dev", lan]);
            }
            node.ip(&["link", "set", parent, "up"]);
            gw.ip(&["link", "set", lan, "up"]);
        }
        gw.ip(&[
            "link",
            "add",
            "toclient",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            client.name(),
        ]);
        gw.ip(&["addr", "add", "10.9.0.1/24", "dev", "toclient"]);
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]);
        if dual_stack {
            gw.ip(&["addr", "add", "fd00:9::1/64", "dev", "toclient"]);
            client.ip(&["addr", "add", &format!("{CLIENT_V6}/64"), "dev", "eth0"]);
        }
        gw.ip(&["link", "set", "toclient", "up"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client.ip(&["route", "add", "default", "via", "10.9.0.1"]);
        if dual_stack {
            client.ip(&["-6", "route", "add", "default", "via", "fd00:9::1"]);
        }
        gw.sysctl("net.ipv4.ip_forward", "1");
        for dev in ["all", "default", "lan192", "lan224", "toclient"] {
            gw.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "1");
        }
        if dual_stack {
            gw.sysctl("net.ipv6.conf.all.forwarding", "1");
            gw.must(
                "ip6tables",
                &[
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-m",
                    "rpfilter",
                    "--invert",
                    "-j",
                    "DROP",
                ],
            );
        }
        t
    }

    /// Emulates a ClusterIP the way kube-proxy does on the node: traffic to `cluster_ip` is
    /// DNATed to the node's own address (ICMP and TCP), where the node answers.
    pub fn add_cluster_ip(&self, cluster_ip: &str, backend: &str) {
        let tool = if cluster_ip.contains(':') {
            "ip6tables"
        } else {
            "iptables"
        };
        for proto in ["icmp", "tcp"] {
            let proto = if proto == "icmp" && tool == "ip6tables" {
                "ipv6-icmp"
            } else {
                proto
            };
            self.node.must(
                tool,
                &[
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-d",
                    cluster_ip,
                    "-p",
                    proto,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    backend,
                ],
            );
        }
    }
}

/// The attachment a [`Chain`] command is about.
#[derive(Debug, Clone)]
pub struct ChainArgs<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_NETNS` (optional on DEL).
    pub netns: Option<&'a Path>,
    /// `CNI_ARGS`.
    pub args: &'a str,
}

/// A CNI network config list, run the way libcni runs it, inside the node's namespace.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The list (`cniVersion`, `name`, `plugins`).
    pub conflist: Value,
    /// Directories plugins are looked up in (`CNI_PATH`).
    pub cni_path: Vec<PathBuf>,
    /// The namespace plugins run in (the node's name).
    pub node: String,
    /// Extra environment for every plugin.
    pub env: Vec<(String, String)>,
    /// `runtimeConfig` offered to plugins, filtered by their `capabilities` like libcni.
    pub runtime_config: Value,
}

impl Chain {
    /// A chain of `conflist`, with plugins from `cni_path`, run in `node`.
    pub fn new(conflist: Value, cni_path: Vec<PathBuf>, node: &Ns) -> Chain {
        Chain {
            conflist,
            cni_path,
            node: node.name().to_owned(),
            env: Vec::new(),
            runtime_config: json!({}),
        }
    }

    /// The list's `cniVersion`.
    pub fn version(&self) -> &str {
        self.conflist["cniVersion"].as_str().unwrap_or("1.0.0")
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn find(&self, plugin_type: &str) -> PathBuf {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin {plugin_type} not in {:?}", self.cni_path))
    }

    /// The stdin libcni gives `plugin`: the plugin object plus `cniVersion`, `name`, the
    /// `runtimeConfig` keys it declared as capabilities, and `prevResult`.
    pub fn stdin_of(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        conf["name"] = self.conflist["name"].clone();
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let mut rc = serde_json::Map::new();
            for (key, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = self.runtime_config.get(key)
                {
                    rc.insert(key.clone(), v.clone());
                }
            }
            if !rc.is_empty() {
                conf["runtimeConfig"] = Value::Object(rc);
            }
        }
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    /// Runs one plugin with `command` in the node's namespace.
    pub fn exec(
        &self,
        command: &str,
        plugin: &Value,
        a: &ChainArgs<'_>,
        prev: Option<&Value>,
    ) -> Outcome {
        let plugin_type = plugin["type"].as_str().expect("a plugin has a type");
        let cni_path = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let netns = a.netns.map(|n| n.display().to_string());
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", a.container_id),
            ("CNI_IFNAME", a.ifname),
            ("CNI_PATH", &cni_path),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ];
        if let Some(netns) = &netns {
            env.push(("CNI_NETNS", netns));
        }
        if !a.args.is_empty() {
            env.push(("CNI_ARGS", a.args));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let stdin = serde_json::to_vec(&self.stdin_of(plugin, prev)).expect("JSON");
        plugin::run(
            plugin::command_in(&self.node, &self.find(plugin_type), &env),
            &stdin,
        )
    }

    /// ADD through the whole list; the final result, or the first failure (`Err` names the
    /// plugin and carries its run).
    pub fn add(&self, a: &ChainArgs<'_>) -> Result<Value, (String, Outcome)> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let run = self.exec("ADD", &plugin, a, prev.as_ref());
            if run.code != 0 {
                return Err((plugin["type"].as_str().unwrap_or("?").to_owned(), run));
            }
            prev = Some(run.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the list in reverse; `result` (the cached ADD result) is passed as
    /// `prevResult` from 0.4.0 on, like libcni. Every plugin runs; the failures are returned.
    pub fn del(&self, a: &ChainArgs<'_>, result: Option<&Value>) -> Vec<(String, Outcome)> {
        let with_prev = !self.version().starts_with("0.3");
        let mut failures = Vec::new();
        for plugin in self.plugins().iter().rev() {
            let run = self.exec("DEL", plugin, a, result.filter(|_| with_prev));
            if run.code != 0 {
                failures.push((plugin["type"].as_str().unwrap_or("?").to_owned(), run));
            }
        }
        failures
    }

    /// CHECK through the list with the cached result (config 0.4.0 and later).
    pub fn check(&self, a: &ChainArgs<'_>, result: &Value) -> Result<(), (String, Outcome)> {
        for plugin in self.plugins() {
            let run = self.exec("CHECK", &plugin, a, Some(result));
            if run.code != 0 {
                return Err((plugin["type"].as_str().unwrap_or("?").to_owned(), run));
            }
        }
        Ok(())
    }
}
