//! The seed's two-NIC pod, IPv4, in network namespaces: DESIGN §7's reference state, proven
//! by traffic, with a pod wired without `berth-route` as the negative control; then re-ADD,
//! CHECK, DEL (also without the namespace, after it is gone, and with the parent gone).
//!
//! Chains are the seed's: Debian's macvlan (with `static` IPAM standing in for the IPAM,
//! which is not what is tested here) followed by `berth-route` installed as `veth`, run the
//! way libcni runs them, inside the node's namespace. Needs root and Debian's plugins: the
//! `root-tests` feature runs it (scripts/test turns it on as root); otherwise it is ignored. One test function: the steps run serially, every name is unique and
//! every namespace is deleted by a guard.

mod support;

use berth_test_support::seed::addr::*;
use serde_json::json;
use support::*;

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn seed_pod_ipv4_policy_routing_and_node_reachability() {
    berth_test_support::require(&NEEDS);
    let bench = Bench::new(false);
    let topo = &bench.topo;
    topo.add_cluster_ip(CLUSTER_IP, NODE_ENS192);

    let veth = bench.veth(json!({}));
    let ens192 = |v: &str, ip: &str, tail: bool| {
        let tail = if tail { vec![veth.clone()] } else { vec![] };
        bench.chain(v, "macvlan-conf-ens192", "ens192", &[(ip, GW_192)], tail)
    };
    let ens224 = |v: &str, ip: &str, tail: bool| {
        let tail = if tail { vec![veth.clone()] } else { vec![] };
        bench.chain(v, "macvlan-conf-ens224", "ens224", &[(ip, GW_224)], tail)
    };

    // Pod A: the seed's pod. Pod B: a second pod at the seed's own version 0.3.1.
    // Pod C: the same two macvlan NICs without berth-route (the negative control).
    let mut a = Pod::new("test-app-a");
    let (a0, a1) = (
        ens192("0.4.0", "10.6.168.172/16", true),
        ens224("0.4.0", "10.7.168.173/16", true),
    );
    a.add(&a0, "eth0");
    a.add(&a1, "net1");
    let mut b = Pod::new("test-app-b");
    let (b0, b1) = (
        ens192("0.3.1", "10.6.168.174/16", true),
        ens224("0.3.1", "10.7.168.174/16", true),
    );
    let rb = b.add(&b0, "eth0");
    assert_eq!(rb["cniVersion"], "0.3.1", "prevResult passed through: {rb}");
    assert_eq!(rb["ips"][0]["address"], "10.6.168.174/16");
    b.add(&b1, "net1");
    // Its net1 gets no default route from IPAM, so its one default is eth0's — the seed's
    // "default route on NIC 1" (with a default on both, the newer one wins and eth0 breaks).
    let mut c = Pod::new("control");
    let (c0, mut c1) = (
        ens192("1.0.0", "10.6.168.175/16", false),
        ens224("1.0.0", "10.7.168.175/16", false),
    );
    c1.conflist["plugins"][0]["ipam"]["routes"] = json!([]);
    c.add(&c0, "eth0");
    c.add(&c1, "net1");

    // --- The reference state (DESIGN §7) in pod A.
    assert_eq!(
        extra_rules(&a.ns, false),
        [
            "32764: from 10.7.168.173 lookup 100",
            "32765: from all to 10.7.0.0/16 lookup 100"
        ]
    );
    let main = table(&a.ns, false, "main");
    for line in [
        "default via 10.6.0.1 dev eth0",
        "10.6.168.123 dev veth0 scope link",
        "10.96.0.0/12 via 10.6.168.123 dev veth0",
    ] {
        assert!(
            main.contains(&line.to_owned()),
            "main lacks {line}: {main:#?}"
        );
    }
    assert!(
        !main.iter().any(|l| l.starts_with("default via 10.7.0.1")),
        "net1's default left main: {main:#?}"
    );
    assert_eq!(
        table(&a.ns, false, "100"),
        sorted(&[
            "default via 10.7.0.1 dev net1",
            "10.7.0.0/16 dev net1 scope link src 10.7.168.173",
            "10.6.168.123 dev veth0 scope link",
            "10.96.0.0/12 via 10.6.168.123 dev veth0",
        ])
    );
    let node = &topo.node;
    let node_main = table(node, false, "main");
    for ip in ["10.6.168.172", "10.7.168.173"] {
        let line = format!("{ip} dev {} scope link src {NODE_ENS192}", a.host_veth());
        assert!(
            node_main.contains(&line),
            "node lacks {line}: {node_main:#?}"
        );
    }
    let neigh = a.ns.ip(&["neigh", "show", "dev", "veth0"]);
    assert!(
        neigh.contains("10.6.168.123 lladdr") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    let alias = node.ip(&["link", "show", "dev", &a.host_veth()]);
    assert!(
        alias.contains(&format!("alias berth-route:macvlan-conf-ens192:{}", a.id)),
        "{alias}"
    );

    // --- Replies leave by the NIC the request came in on: a client outside both pod
    // subnets, behind a gateway with rp_filter=1, reaches net1 of pod A ...
    let client = &topo.client;
    assert_eq!(
        a.ns.route_get(CLIENT, Some("10.7.168.173")),
        ("net1".into(), Some(GW_224.into()))
    );
    assert!(
        client.ping("10.7.168.173", None),
        "client → pod A net1 must work"
    );
    assert!(client.ping("10.6.168.172", None), "client → pod A eth0");
    // ... but not net1 of the control pod, whose reply leaves by eth0 and is dropped.
    assert_eq!(
        c.ns.route_get(CLIENT, Some("10.7.168.175")).0,
        "eth0",
        "the control pod routes replies from net1 out of eth0"
    );
    assert!(
        !client.ping("10.7.168.175", None),
        "negative control: client → control pod net1 must fail (strict uRPF at the gateway)"
    );
    assert!(client.ping("10.6.168.175", None), "client → control eth0");

    // --- Node ↔ pod over veth0 (macvlan alone cannot: the control pod's node is unreachable).
    assert_eq!(a.ns.route_get(NODE_ENS192, None).0, "veth0");
    assert!(a.ns.ping(NODE_ENS192, None), "pod A → node");
    assert!(node.ping("10.6.168.172", None), "node → pod A eth0");
    assert!(node.ping("10.7.168.173", None), "node → pod A net1");
    assert_eq!(node.route_get("10.6.168.172", None).0, a.host_veth());
    assert!(
        !c.ns.ping(NODE_ENS192, None),
        "control pod → node must fail"
    );

    // --- Services: the CIDR leaves by veth0 via the node, from either NIC; a ClusterIP
    // DNATed on the node (as kube-proxy does) answers.
    assert_eq!(
        a.ns.route_get(CLUSTER_IP, None),
        ("veth0".into(), Some(NODE_ENS192.into()))
    );
    assert_eq!(
        a.ns.route_get(CLUSTER_IP, Some("10.7.168.173")),
        ("veth0".into(), Some(NODE_ENS192.into()))
    );
    assert!(a.ns.ping(CLUSTER_IP, None), "pod A → ClusterIP");
    assert!(
        a.ns.ping(CLUSTER_IP, Some("10.7.168.173")),
        "pod A → ClusterIP from net1"
    );
    assert!(
        !c.ns.ping(CLUSTER_IP, None),
        "control pod → ClusterIP must fail"
    );

    // --- Pod ↔ pod on both NICs.
    for (from, to, src) in [
        (&a, "10.6.168.174", None),
        (&a, "10.7.168.174", None),
        (&a, "10.7.168.174", Some("10.7.168.173")),
        (&b, "10.7.168.173", None),
        (&b, "10.6.168.172", None),
    ] {
        assert!(
            from.ns.ping(to, src),
            "{} → {to} from {src:?}",
            from.ns.name()
        );
    }

    // --- Re-ADD changes nothing and adds no rule twice.
    let before = (
        a.ns.rules(false),
        table(&a.ns, false, "main"),
        table(&a.ns, false, "100"),
    );
    for (chain, nic) in [(&a0, "eth0"), (&a1, "net1"), (&a1, "net1")] {
        let run = a.route(chain, "ADD", nic);
        assert_eq!(run.code, 0, "re-ADD {nic}: {run:?}");
        assert_eq!(run.json(), a.results[nic], "re-ADD prints prevResult");
    }
    assert_eq!(
        (
            a.ns.rules(false),
            table(&a.ns, false, "main"),
            table(&a.ns, false, "100")
        ),
        before
    );
    assert!(client.ping("10.7.168.173", None), "still reachable");

    // --- CHECK passes, fails once a rule is deleted by hand (naming it), passes after ADD.
    a0.check(&a.a("eth0", Some(&a.ns.path())), &a.results["eth0"])
        .unwrap_or_else(|e| panic!("CHECK eth0: {e:?}"));
    a1.check(&a.a("net1", Some(&a.ns.path())), &a.results["net1"])
        .unwrap_or_else(|e| panic!("CHECK net1: {e:?}"));
    a.ns.ip(&["rule", "del", "pref", "32764"]);
    let run = a.route(&a1, "CHECK", "net1");
    let err = run.json();
    assert_eq!((run.code, err["code"].as_u64()), (1, Some(111)), "{run:?}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("pod: rule from 10.7.168.173 lookup 100 pref 32764"),
        "{err}"
    );
    a.ns.ip(&["route", "del", "10.96.0.0/12", "dev", "veth0"]);
    let err = a.route(&a0, "CHECK", "eth0").json();
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("pod: route 10.96.0.0/12 via 10.6.168.123 dev veth0"),
        "{err}"
    );
    assert_eq!(a.route(&a1, "ADD", "net1").code, 0);
    assert_eq!(a.route(&a0, "ADD", "eth0").code, 0);
    assert_eq!(a.route(&a1, "CHECK", "net1").code, 0);
    assert_eq!(a.route(&a0, "CHECK", "eth0").code, 0);
    assert_eq!(
        a.ns.rules(false),
        before.0,
        "ADD restored exactly the rules"
    );

    // --- DEL (runtime order: net1's chain, then eth0's, each in reverse) leaves nothing.
    for (chain, nic) in [(&a1, "net1"), (&a0, "eth0")] {
        let failures = a.del(chain, nic, true);
        assert!(failures.is_empty(), "DEL {nic}: {failures:?}");
    }
    assert_node_clean(&bench, &a, &["10.6.168.172", "10.7.168.173"]);
    assert!(
        extra_rules(&a.ns, false).is_empty(),
        "{:?}",
        a.ns.rules(false)
    );
    assert!(table(&a.ns, false, "100").is_empty());
    for (chain, nic) in [(&a1, "net1"), (&a0, "eth0")] {
        assert!(a.del(chain, nic, true).is_empty(), "DEL twice succeeds");
    }

    // --- DEL without CNI_NETNS (optional on DEL) still removes the node side.
    let run = b.route(&b1, "ADD", "net1");
    assert_eq!(run.code, 0);
    for (chain, nic) in [(&b1, "net1"), (&b0, "eth0")] {
        let veth_only = support_veth_only(chain);
        let failures = b.del(&veth_only, nic, false);
        assert!(failures.is_empty(), "DEL {nic} without netns: {failures:?}");
    }
    assert_node_clean(&bench, &b, &["10.6.168.174", "10.7.168.174"]);

    // --- DEL after the pod's namespace is gone, and with the parent link gone.
    let mut d = Pod::new("test-app-d");
    let (d0, d1) = (
        ens192("1.0.0", "10.6.168.176/16", true),
        ens224("1.0.0", "10.7.168.176/16", true),
    );
    d.add(&d0, "eth0");
    d.add(&d1, "net1");
    let mut e = Pod::new("test-app-e");
    let (e0, e1) = (
        ens192("1.0.0", "10.6.168.177/16", true),
        ens224("1.0.0", "10.7.168.177/16", true),
    );
    e.add(&e0, "eth0");
    e.add(&e1, "net1");
    topo.node.ip(&["link", "del", "ens224"]);
    for (chain, nic) in [(&e1, "net1"), (&e0, "eth0")] {
        let run = e.route(chain, "DEL", nic);
        assert_eq!(
            run.code, 0,
            "berth-route DEL {nic} with ens224 gone: {run:?}"
        );
    }
    assert_node_clean(&bench, &e, &["10.6.168.177", "10.7.168.177"]);
    let path = d.ns.path();
    berth_test_support::ip(&["netns", "del", d.ns.name()]);
    for (chain, nic) in [(&d1, "net1"), (&d0, "eth0")] {
        let run = chain.exec(
            "DEL",
            chain.conflist["plugins"]
                .as_array()
                .unwrap()
                .last()
                .unwrap(),
            &d.a(nic, Some(&path)),
            d.results.get(nic),
        );
        assert_eq!(run.code, 0, "DEL {nic} after the netns is gone: {run:?}");
    }
    assert_node_clean(&bench, &d, &["10.6.168.176", "10.7.168.176"]);
    drop(c);
}

/// A chain with only its last plugin (`berth-route`).
fn support_veth_only(chain: &berth_test_support::seed::Chain) -> berth_test_support::seed::Chain {
    let mut only = chain.clone();
    let last = chain.conflist["plugins"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    only.conflist["plugins"] = json!([last]);
    only
}

/// No node end of the pod, no node route to its addresses.
fn assert_node_clean(bench: &Bench, pod: &Pod, ips: &[&str]) {
    let node = &bench.topo.node;
    let links = node.ip(&["link", "show"]);
    assert!(
        !links.contains(&pod.host_veth()),
        "{} left on the node: {links}",
        pod.host_veth()
    );
    let routes = node.ip(&["route", "show", "table", "all"]);
    for ip in ips {
        assert!(
            !routes.lines().any(|l| l.starts_with(&format!("{ip} "))),
            "node route to {ip} left: {routes}"
        );
    }
}
