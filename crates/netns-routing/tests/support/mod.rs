//! Shared by the namespace tests: the seed topology with plugins installed, pods, and the
//! CNI chains of the seed (Debian's macvlan + `static` IPAM + `berth-route` as `veth`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_test_support::Outcome;
use berth_test_support::netns::Ns;
use berth_test_support::seed::{Chain, ChainArgs, SeedTopology};
use serde_json::{Value, json};

/// The plugin binary cargo built for these tests.
pub const BERTH_ROUTE: &str = env!("CARGO_BIN_EXE_berth-route");
/// Debian's containernetworking-plugins.
pub const DEBIAN: &str = "/usr/lib/cni";

/// What the namespace tests need beyond root: Debian's plugins.
pub const NEEDS: [&str; 3] = [
    "/usr/lib/cni/macvlan",
    "/usr/lib/cni/static",
    "/usr/lib/cni/sbr",
];

/// The topology, a scratch dir, and `berth-route` installed as `veth` in `<dir>/bin`.
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub topo: SeedTopology,
}

impl Bench {
    pub fn new(dual_stack: bool) -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("berth-route-test")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(BERTH_ROUTE, dir.path().join("bin/veth")).unwrap();
        Bench {
            dir,
            topo: SeedTopology::new(dual_stack),
        }
    }

    pub fn cni_path(&self) -> Vec<PathBuf> {
        vec![self.dir.path().join("bin"), PathBuf::from(DEBIAN)]
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log/berth-route.log")
    }

    /// The `veth` plugin object of the seed, logging into the scratch dir.
    pub fn veth(&self, extra: Value) -> Value {
        let mut v = json!({
            "type": "veth",
            "service_cidr": ["10.96.0.0/12"],
            "log_options": {"log_file": self.log(), "log_level": "debug"}
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// A seed-shaped network: macvlan on `master` with `static` IPAM handing out
    /// `addresses` (`(address, gateway)`) and a default route per family, then `tail`
    /// plugins (e.g. the `veth` one; none for a control pod).
    pub fn chain(
        &self,
        version: &str,
        network: &str,
        master: &str,
        addresses: &[(&str, &str)],
        tail: Vec<Value>,
    ) -> Chain {
        let routes: Vec<Value> = addresses
            .iter()
            .map(|(a, gw)| {
                let dst = if a.contains(':') { "::/0" } else { "0.0.0.0/0" };
                json!({"dst": dst, "gw": gw})
            })
            .collect();
        let mut plugins = vec![json!({
            "type": "macvlan",
            "master": master,
            "mode": "bridge",
            "ipam": {
                "type": "static",
                "addresses": addresses.iter().map(|(a, gw)| json!({"address": a, "gateway": gw})).collect::<Vec<_>>(),
                "routes": routes,
            }
        })];
        plugins.extend(tail);
        Chain::new(
            json!({"cniVersion": version, "name": network, "plugins": plugins}),
            self.cni_path(),
            &self.topo.node,
        )
    }
}

/// A pod: its namespace, container id, CNI_ARGS and the cached ADD results per NIC.
pub struct Pod {
    pub ns: Ns,
    pub id: String,
    pub args: String,
    pub results: BTreeMap<String, Value>,
}

impl Pod {
    pub fn new(name: &str) -> Pod {
        let ns = Ns::new("pod");
        // Unique in its first 11 characters (the node end's name): the namespace's counter,
        // then the pid; padded to the 64 hex characters of a real container id.
        let n: u32 = ns.name().rsplit('-').next().unwrap().parse().unwrap();
        let id = format!("{n:03}{:08x}{}", std::process::id(), "0".repeat(53));
        Pod {
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};\
                 K8S_POD_INFRA_CONTAINER_ID={id}"
            ),
            ns,
            id,
            results: BTreeMap::new(),
        }
    }

    pub fn host_veth(&self) -> String {
        netns_routing::plan::host_veth_name(&self.id)
    }

    pub fn a<'a>(&'a self, ifname: &'a str, netns: Option<&'a Path>) -> ChainArgs<'a> {
        ChainArgs {
            container_id: &self.id,
            ifname,
            netns,
            args: &self.args,
        }
    }

    /// ADD of `ifname` through `chain`; panics with the failing plugin's output.
    pub fn add(&mut self, chain: &Chain, ifname: &str) -> Value {
        let path = self.ns.path();
        let result = chain
            .add(&self.a(ifname, Some(&path)))
            .unwrap_or_else(|(plugin, run)| panic!("ADD {ifname}: {plugin} failed: {run:?}"));
        self.results.insert(ifname.to_owned(), result.clone());
        result
    }

    /// DEL of `ifname` through `chain` with the cached result; the failures.
    pub fn del(&self, chain: &Chain, ifname: &str, netns: bool) -> Vec<(String, Outcome)> {
        let path = self.ns.path();
        let netns = netns.then_some(path.as_path());
        chain.del(&self.a(ifname, netns), self.results.get(ifname))
    }

    /// Runs only `berth-route` (the last plugin of `chain`) with `command` and the cached
    /// result as `prevResult`.
    pub fn route(&self, chain: &Chain, command: &str, ifname: &str) -> Outcome {
        let plugins = chain.conflist["plugins"].as_array().unwrap();
        let veth = plugins.last().unwrap();
        let path = self.ns.path();
        chain.exec(
            command,
            veth,
            &self.a(ifname, Some(&path)),
            self.results.get(ifname),
        )
    }
}

/// The rules of a namespace other than the kernel's three defaults.
pub fn extra_rules(ns: &Ns, ipv6: bool) -> Vec<String> {
    ns.rules(ipv6)
        .into_iter()
        .filter(|r| {
            !r.starts_with("0: from all lookup local")
                && !r.starts_with("32766: from all lookup main")
                && !r.starts_with("32767: from all lookup default")
        })
        .collect()
}

/// Routes of a table without `proto static` / `metric 1024` / `pref medium` noise.
pub fn table(ns: &Ns, ipv6: bool, table: &str) -> Vec<String> {
    let mut lines: Vec<String> = ns
        .routes(ipv6, table)
        .into_iter()
        .map(|l| {
            l.replace(" proto static", "")
                .replace(" proto kernel", "")
                .replace(" proto boot", "")
                .replace(" metric 1024", "")
                .replace(" metric 256", "")
                .replace(" pref medium", "")
        })
        .collect();
    lines.sort();
    lines
}

/// Sorted owned lines, for comparisons.
pub fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}
