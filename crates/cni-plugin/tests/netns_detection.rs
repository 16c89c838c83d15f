//! IP conflict and gateway detection, driven by Debian's `macvlan` (1.1.1) as a runtime
//! would: `berth-ipam` (installed as `spiderpool`) probes the NIC macvlan made, inside
//! network namespaces this test makes. The segment: a "node" namespace whose veth end
//! `ens192` is the macvlan parent, and a "lan" namespace holding the other end — the rest of
//! the segment, where a squatter holds an address or the gateway lives (or does not).
//! Nothing is added to the root namespace; every name is unique and every namespace is
//! deleted by a guard.
//!
//! Needs root and `/usr/lib/cni/macvlan`: the `root-tests` feature runs it.

mod support;

use std::path::PathBuf;

use berth_test_support::netns::Ns;
use berth_test_support::plugin::{self, Outcome};
use cni_plugin::ipam::probe;
use ipam_core::engine::AnyObject;
use ipam_core::{SpiderIPPool, ips};
use serde_json::{Value, json};
use support::*;

const MACVLAN: &str = "/usr/lib/cni/macvlan";

/// Re-executed by [`AgentProcess::start_with`]: runs the agent when asked to, else nothing.
#[test]
fn agent_process_entry() {
    agent_entry();
}

struct Lab {
    s: Scratch,
    bin: PathBuf,
    node: Ns,
    lan: Ns,
}

impl Lab {
    fn new() -> Lab {
        berth_test_support::require(&[MACVLAN]);
        let s = Scratch::new();
        let bin = s.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("spiderpool")).unwrap();
        let node = Ns::new("node");
        let lan = Ns::new("lan");
        node.ip(&[
            "link",
            "add",
            "ens192",
            "type",
            "veth",
            "peer",
            "name",
            "sw192",
            "netns",
            lan.name(),
        ]);
        node.ip(&["link", "set", "ens192", "up"]);
        lan.ip(&["link", "set", "sw192", "up"]);
        Lab { s, bin, node, lan }
    }

    /// The seed's NAD for ens192, embedded mode, with more `ipam` keys.
    fn nad(&self, ipam: Value) -> Vec<u8> {
        self.nad_on(self.s.embedded_ipam(), ipam)
    }

    fn nad_on(&self, mut base: Value, ipam: Value) -> Vec<u8> {
        for (k, v) in ipam.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": "macvlan-conf-ens192",
            "type": "macvlan",
            "master": "ens192",
            "mode": "bridge",
            "ipam": base,
        }))
        .unwrap()
    }

    /// Debian's macvlan, in the node namespace, for the pod namespace `pod`.
    fn cni(&self, command: &str, cid: &str, pod: &Ns, args: &str, conf: &[u8]) -> Outcome {
        let cni_path = format!("{}:/usr/lib/cni", self.bin.display());
        let netns = pod.path().display().to_string();
        let mut env = attach_env(command, cid, "eth0", &netns, args);
        env.push(("CNI_PATH", &cni_path));
        plugin::run(
            plugin::command_in(self.node.name(), MACVLAN.as_ref(), &env),
            conf,
        )
    }

    /// A failed ADD, then the DEL a runtime sends for the sandbox it gives up (Debian's
    /// macvlan leaves its link behind when IPAM fails; DEL removes it). The ADD's error.
    fn failed_add(&self, cid: &str, pod: &Ns, args: &str, conf: &[u8]) -> Value {
        let err = self.cni("ADD", cid, pod, args, conf).err();
        self.cni("DEL", cid, pod, args, conf).ok();
        assert_eq!(
            pod.ip_json(&["link", "show"]).as_array().unwrap().len(),
            1,
            "only lo is left"
        );
        err
    }

    /// `ip addr add <cidr> dev sw192` in the lan namespace.
    fn hold(&self, cidr: &str) {
        self.lan.ip(&["addr", "add", cidr, "dev", "sw192", "nodad"]);
    }

    fn release(&self, cidr: &str) {
        self.lan.ip(&["addr", "del", cidr, "dev", "sw192"]);
    }

    /// The MAC that answers for the lan's addresses.
    fn lan_mac(&self) -> String {
        self.lan.ip_json(&["link", "show", "sw192"])[0]["address"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn deployment_pod(name: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID=uid-{name}-{};\
         BERTH_OWNER=Deployment/test-app",
        berth_test_support::unique("u")
    )
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().to_owned())
        .collect()
}

fn message(err: &Value) -> String {
    format!("{} {}", err["msg"], err["details"])
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn a_squatter_fails_add_naming_ip_and_mac_and_the_retry_gets_another_ip() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), seed_objects("subnets.yaml"));
    apply(&lab.s.data_dir(), seed_objects("deployment.yaml"));
    lab.hold("10.6.168.171/16");
    let conf = lab.nad(json!({"enable_ip_conflict_detection": true}));
    let pod = Ns::new("pod");
    let args = deployment_pod("test-app-7d9f-aaaaa");

    let err = lab.failed_add("c1", &pod, &args, &conf);
    let msg = message(&err);
    assert_eq!(err["code"], 107, "{err}");
    assert!(
        msg.contains("10.6.168.171") && msg.contains(&lab.lan_mac()),
        "names the IP and the MAC that answered: {msg}"
    );
    assert!(msg.contains("released 10.6.168.171"), "{msg}");
    assert!(held(&lab.s.data_dir()).is_empty(), "the IP went back");

    // The runtime's retry (a new sandbox) gets the next address: the pool's round-robin
    // cursor is stored with the pool, so even a new plugin process skips the released one.
    let ok = lab.cni("ADD", "c2", &pod, &args, &conf).ok();
    assert_eq!(addresses(&ok), ["10.6.168.172/16"], "{ok}");
    assert_eq!(held(&lab.s.data_dir()).len(), 1);
    lab.cni("DEL", "c2", &pod, &args, &conf).ok();
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn a_statefulset_pod_keeps_its_ip_and_gets_a_clear_error() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), seed_objects("subnets.yaml"));
    apply(&lab.s.data_dir(), seed_objects("statefulset.yaml"));
    lab.hold("10.6.168.171/16");
    let conf = lab.nad(json!({"enable_ip_conflict_detection": true}));
    let pod = Ns::new("pod");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test-sts-0;\
                K8S_POD_UID=uid-sts-0;BERTH_OWNER=StatefulSet/test-sts";

    for cid in ["s1", "s2"] {
        let err = lab.failed_add(cid, &pod, args, &conf);
        let msg = message(&err);
        assert_eq!(err["code"], 107, "{err}");
        assert!(
            msg.contains("10.6.168.171")
                && msg.contains(&lab.lan_mac())
                && msg.contains("StatefulSet pod default/test-sts-0 keeps its IPs"),
            "{msg}"
        );
        let kept: Vec<String> = records(&lab.s.data_dir())
            .into_values()
            .flatten()
            .map(|(ip, r)| format!("{ip} {}", r.pod))
            .collect();
        assert_eq!(kept, ["10.6.168.171 default/test-sts-0"], "still reserved");
    }
    // Once the other host lets go, the pod starts with its address.
    lab.release("10.6.168.171/16");
    let ok = lab.cni("ADD", "s3", &pod, args, &conf).ok();
    assert_eq!(addresses(&ok), ["10.6.168.171/16"], "{ok}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn a_gateway_that_does_not_answer_fails_add_and_one_that_answers_passes() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), seed_objects("subnets.yaml"));
    apply(&lab.s.data_dir(), seed_objects("deployment.yaml"));
    let conf = lab.nad(json!({"enable_gateway_detection": true}));
    let pod = Ns::new("pod");
    let args = deployment_pod("test-app-7d9f-bbbbb");

    // Nothing holds 10.6.0.1.
    let err = lab.failed_add("g1", &pod, &args, &conf);
    let msg = message(&err);
    assert_eq!(err["code"], 108, "{err}");
    assert!(
        msg.contains("gateway 10.6.0.1 is unreachable") && msg.contains("released 10.6.168.171"),
        "{msg}"
    );
    assert!(held(&lab.s.data_dir()).is_empty());

    lab.hold("10.6.0.1/16");
    let ok = lab.cni("ADD", "g2", &pod, &args, &conf).ok();
    assert_eq!(addresses(&ok), ["10.6.168.172/16"], "{ok}");
    assert!(pod.ping("10.6.0.1", None), "the gateway answers");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn without_a_squatter_or_with_detection_off_add_succeeds() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), seed_objects("subnets.yaml"));
    apply(&lab.s.data_dir(), seed_objects("deployment.yaml"));
    lab.hold("10.6.0.1/16");
    let pod = Ns::new("pod");
    let args = deployment_pod("test-app-7d9f-ccccc");

    // Both checks on, nobody else on the address, the gateway there.
    let on =
        lab.nad(json!({"enable_ip_conflict_detection": true, "enable_gateway_detection": true}));
    let ok = lab.cni("ADD", "n1", &pod, &args, &on).ok();
    assert_eq!(addresses(&ok), ["10.6.168.171/16"], "{ok}");
    lab.cni("DEL", "n1", &pod, &args, &on).ok();

    // A squatter on the next address, detection off (absent, then explicitly false): no
    // probe, so ADD hands out the address as before.
    lab.hold("10.6.168.172/16");
    lab.hold("10.6.168.173/16");
    for (cid, conf) in [
        ("n2", lab.nad(json!({}))),
        (
            "n3",
            lab.nad(
                json!({"enable_ip_conflict_detection": false, "enable_gateway_detection": false}),
            ),
        ),
    ] {
        let pod = Ns::new("pod");
        let ok = lab.cni("ADD", cid, &pod, &args, &conf).ok();
        let got = addresses(&ok);
        assert!(
            got == ["10.6.168.172/16"] || got == ["10.6.168.173/16"],
            "a squatted address, since nothing probed: {ok}"
        );
    }
}

/// A dual-stack pair of pools in `10.66.0.0/16` and `fd00:66::/64`.
fn dual_stack_pools() -> Vec<AnyObject> {
    let mut v4 = SpiderIPPool::new(
        "lab4",
        "10.66.0.0/16".parse().unwrap(),
        ips!["10.66.0.10-10.66.0.12"],
    );
    v4.spec.gateway = Some("10.66.0.1".parse().unwrap());
    let mut v6 = SpiderIPPool::new(
        "lab6",
        "fd00:66::/64".parse().unwrap(),
        ips!["fd00:66::10-fd00:66::12"],
    );
    v6.spec.gateway = Some("fd00:66::1".parse().unwrap());
    vec![AnyObject::Pool(v4), AnyObject::Pool(v6)]
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn ipv6_conflicts_and_gateways_are_found_by_neighbour_discovery() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), dual_stack_pools());
    lab.hold("10.66.0.1/16");
    lab.hold("fd00:66::1/64");
    lab.hold("fd00:66::10/64");
    let conf = lab.nad(json!({
        "default_ipv4_ippool": ["lab4"], "default_ipv6_ippool": ["lab6"],
        "enable_ip_conflict_detection": true, "enable_gateway_detection": true
    }));
    let pod = Ns::new("pod");

    let err = lab.failed_add("v1", &pod, "", &conf);
    let msg = message(&err);
    assert_eq!(err["code"], 107, "{err}");
    assert!(
        msg.contains("fd00:66::10")
            && msg.contains(&lab.lan_mac())
            && msg.contains("neighbour solicitation"),
        "{msg}"
    );
    assert!(held(&lab.s.data_dir()).is_empty(), "both families released");

    // The retry gets the next pair; both gateways answer neighbour / ARP requests.
    let ok = lab.cni("ADD", "v2", &pod, "", &conf).ok();
    assert_eq!(addresses(&ok), ["10.66.0.11/16", "fd00:66::11/64"], "{ok}");

    // Without the IPv6 gateway, ADD fails naming it.
    lab.release("fd00:66::1/64");
    let other = Ns::new("pod");
    let err = lab.failed_add("v3", &other, "", &conf);
    assert_eq!(err["code"], 108, "{err}");
    assert!(
        message(&err).contains("gateway fd00:66::1 is unreachable"),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn the_agents_defaults_turn_detection_on_and_the_network_config_overrides_them() {
    let lab = Lab::new();
    apply(&lab.s.data_dir(), seed_objects("subnets.yaml"));
    apply(&lab.s.data_dir(), seed_objects("deployment.yaml"));
    let _agent = AgentProcess::start_with(
        "agent_process_entry",
        &lab.s.data_dir(),
        &lab.s.socket(),
        &lab.s.dir.path().join("agent.log"),
        &[(AGENT_DETECTION_VAR, "ip_conflict")],
    );
    lab.hold("10.6.168.171/16");
    let args = deployment_pod("test-app-7d9f-ddddd");
    let pod = Ns::new("pod");

    // The network says nothing: the agent's default probes.
    let silent = lab.nad_on(lab.s.agent_ipam(), json!({}));
    let err = lab.failed_add("a1", &pod, &args, &silent);
    assert_eq!(err["code"], 107, "{err}");
    assert!(message(&err).contains("released 10.6.168.171"), "{err}");
    // The agent's allocator hands out a fresh address before the released one.
    let ok = lab.cni("ADD", "a2", &pod, &args, &silent).ok();
    assert_eq!(addresses(&ok), ["10.6.168.172/16"], "{ok}");

    // The network turns it off: a squatted address is handed out unprobed.
    lab.hold("10.6.168.173/16");
    let off = lab.nad_on(
        lab.s.agent_ipam(),
        json!({"enable_ip_conflict_detection": false}),
    );
    let other = Ns::new("pod");
    let ok = lab
        .cni(
            "ADD",
            "a3",
            &other,
            &deployment_pod("test-app-7d9f-eeeee"),
            &off,
        )
        .ok();
    assert_eq!(addresses(&ok), ["10.6.168.173/16"], "{ok}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn a_clean_probe_sets_the_nic_up_and_announces_the_address() {
    let lab = Lab::new();
    // Gratuitous ARP makes new neighbour entries on the lan side.
    lab.lan.sysctl("net.ipv4.conf.all.arp_accept", "1");
    lab.hold("10.6.0.1/16");
    let pod = Ns::new("pod");
    lab.node.ip(&[
        "link", "add", "link", "ens192", "name", "m0", "type", "macvlan", "mode", "bridge",
    ]);
    lab.node.ip(&["link", "set", "m0", "netns", pod.name()]);
    let mac = pod.ip_json(&["link", "show", "m0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned();

    let targets = [probe::Target {
        address: "10.6.168.200".parse().unwrap(),
        conflict: true,
        gateway: None,
    }];
    rt().block_on(probe::probe(
        &pod.path(),
        "m0",
        &targets,
        &probe::Timing::default(),
    ))
    .unwrap();
    let link = &pod.ip_json(&["link", "show", "m0"])[0];
    assert!(
        link["flags"].as_array().unwrap().contains(&json!("UP")),
        "{link}"
    );
    // Only the announcement (sender 10.6.168.200) can have taught the lan this entry: the
    // probes' sender is 0.0.0.0 and the address is on no NIC.
    let neigh = lab
        .lan
        .ip_json(&["neigh", "show", "10.6.168.200", "dev", "sw192"]);
    assert_eq!(neigh[0]["lladdr"], mac.as_str(), "{neigh}");

    // A link that is not there is a setup failure naming it.
    let err = rt()
        .block_on(probe::probe(
            &pod.path(),
            "nope0",
            &targets,
            &probe::Timing::default(),
        ))
        .unwrap_err();
    assert!(
        matches!(err, probe::Error::Setup { .. }) && err.to_string().contains("nope0"),
        "{err}"
    );
}
