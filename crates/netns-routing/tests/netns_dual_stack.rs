//! The seed's two-NIC pod with IPv4 and IPv6 on both NICs, in network namespaces: the same
//! rules and routes in both families, proven by traffic in IPv6 (the gateway filters with
//! the `rpfilter` match), with a pod wired without `berth-route` as the negative control;
//! re-ADD, CHECK, DEL; then the default-route NIC moved to net1 by the pod annotation, and
//! GC at CNI 1.1.0.
//!
//! Needs root and Debian's plugins: the `root-tests` feature runs it (scripts/test turns it on
//! as root); otherwise it is ignored. One test function, unique names, every namespace deleted
//! by a guard.

mod support;

use berth_test_support::seed::addr::*;
use serde_json::json;
use support::*;

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn seed_pod_dual_stack_and_default_route_nic() {
    berth_test_support::require(&NEEDS);
    let bench = Bench::new(true);
    let topo = &bench.topo;
    topo.add_cluster_ip(CLUSTER_IP, NODE_ENS192);
    topo.add_cluster_ip(CLUSTER_IP_V6, NODE_ENS192_V6);
    let veth = bench.veth(json!({"service_cidr": [SERVICE_CIDR, SERVICE_CIDR_V6]}));
    let chains = |n: u8, tail: Option<&serde_json::Value>| {
        let tail: Vec<_> = tail.into_iter().cloned().collect();
        (
            bench.chain(
                "1.0.0",
                "macvlan-conf-ens192",
                "ens192",
                &[
                    (&format!("10.6.168.{n}/16"), GW_192),
                    (&format!("fd00:6::{n}/64"), GW_192_V6),
                ],
                tail.clone(),
            ),
            bench.chain(
                "1.0.0",
                "macvlan-conf-ens224",
                "ens224",
                &[
                    (&format!("10.7.168.{n}/16"), GW_224),
                    (&format!("fd00:7::{n}/64"), GW_224_V6),
                ],
                tail,
            ),
        )
    };

    let mut a = Pod::new("test-app-a");
    let (a0, a1) = chains(172, Some(&veth));
    a.add(&a0, "eth0");
    a.add(&a1, "net1");
    let mut b = Pod::new("test-app-b");
    let (b0, b1) = chains(174, Some(&veth));
    b.add(&b0, "eth0");
    b.add(&b1, "net1");
    // The control: net1 without a default route (its one default is eth0's), no berth-route.
    let mut c = Pod::new("control");
    let (c0, mut c1) = chains(175, None);
    c1.conflist["plugins"][0]["ipam"]["routes"] = json!([]);
    c.add(&c0, "eth0");
    c.add(&c1, "net1");

    // --- The reference state, both families.
    assert_eq!(
        extra_rules(&a.ns, false),
        [
            "32764: from 10.7.168.172 lookup 100",
            "32765: from all to 10.7.0.0/16 lookup 100"
        ]
    );
    assert_eq!(
        extra_rules(&a.ns, true),
        [
            "32764: from fd00:7::172 lookup 100",
            "32765: from all to fd00:7::/64 lookup 100"
        ]
    );
    assert_eq!(
        table(&a.ns, true, "100"),
        sorted(&[
            "default via fd00:7::1 dev net1",
            "fd00:7::/64 dev net1",
            "fd00:6::123 dev veth0",
            "fd00:96::/108 via fd00:6::123 dev veth0",
        ])
    );
    let main6 = table(&a.ns, true, "main");
    for line in [
        "fd00:6::123 dev veth0",
        "fd00:96::/108 via fd00:6::123 dev veth0",
    ] {
        assert!(
            main6.contains(&line.to_owned()),
            "main lacks {line}: {main6:#?}"
        );
    }
    let main6_text = a.ns.ip(&["-6", "route", "show", "default"]);
    assert!(
        main6_text.contains("via fd00:6::1 dev eth0") && !main6_text.contains("fd00:7::1"),
        "IPv6 default of main: eth0's only: {main6_text}"
    );
    assert_eq!(table(&a.ns, false, "100").len(), 4);

    // --- IPv6 traffic: replies by the NIC of the request; the control pod fails.
    let client = &topo.client;
    assert_eq!(
        a.ns.route_get(CLIENT_V6, Some("fd00:7::172")),
        ("net1".into(), Some(GW_224_V6.into()))
    );
    assert!(
        client.ping("fd00:7::172", None),
        "client → pod A net1 (IPv6)"
    );
    assert!(
        client.ping("fd00:6::172", None),
        "client → pod A eth0 (IPv6)"
    );
    assert!(
        client.ping("10.7.168.172", None),
        "client → pod A net1 (IPv4)"
    );
    assert!(
        !client.ping("fd00:7::175", None),
        "negative control: client → control pod net1 (IPv6) must fail"
    );
    assert!(
        !client.ping("10.7.168.175", None),
        "negative control: client → control pod net1 (IPv4) must fail"
    );
    assert!(client.ping("fd00:6::175", None), "client → control eth0");
    let node = &topo.node;
    assert!(a.ns.ping(NODE_ENS192_V6, None), "pod A → node (IPv6)");
    assert!(node.ping("fd00:6::172", None), "node → pod A eth0 (IPv6)");
    assert!(node.ping("fd00:7::172", None), "node → pod A net1 (IPv6)");
    assert!(!c.ns.ping(NODE_ENS192_V6, None), "control → node must fail");
    assert_eq!(
        a.ns.route_get(CLUSTER_IP_V6, Some("fd00:7::172")),
        ("veth0".into(), Some(NODE_ENS192_V6.into()))
    );
    assert!(a.ns.ping(CLUSTER_IP_V6, None), "pod A → IPv6 ClusterIP");
    assert!(a.ns.ping(CLUSTER_IP, None), "pod A → IPv4 ClusterIP");
    for (from, to, src) in [
        (&a, "fd00:6::174", None),
        (&a, "fd00:7::174", Some("fd00:7::172")),
        (&b, "fd00:7::172", None),
    ] {
        assert!(from.ns.ping(to, src), "{} → {to}", from.ns.name());
    }

    // --- Re-ADD adds nothing; CHECK catches a deleted IPv6 rule; DEL cleans up.
    let before = (
        a.ns.rules(false),
        a.ns.rules(true),
        table(&a.ns, true, "100"),
    );
    for (chain, nic) in [(&a0, "eth0"), (&a1, "net1")] {
        assert_eq!(a.route(chain, "ADD", nic).code, 0);
    }
    assert_eq!(
        (
            a.ns.rules(false),
            a.ns.rules(true),
            table(&a.ns, true, "100")
        ),
        before
    );
    assert_eq!(a.route(&a1, "CHECK", "net1").code, 0);
    a.ns.ip(&["-6", "rule", "del", "pref", "32765"]);
    let run = a.route(&a1, "CHECK", "net1");
    assert_eq!(run.json()["code"], 111, "{run:?}");
    assert!(
        run.stdout_text()
            .contains("pod: rule to fd00:7::/64 lookup 100 pref 32765"),
        "{run:?}"
    );
    for (chain, nic) in [(&a1, "net1"), (&a0, "eth0")] {
        let failures = a.del(chain, nic, true);
        assert!(failures.is_empty(), "DEL {nic}: {failures:?}");
    }
    assert!(extra_rules(&a.ns, true).is_empty() && extra_rules(&a.ns, false).is_empty());
    let node_routes = node.ip(&["-6", "route", "show", "table", "all"]);
    assert!(
        !node_routes.contains("fd00:6::172") && !node_routes.contains("fd00:7::172"),
        "{node_routes}"
    );
    assert!(!node.ip(&["link"]).contains(&a.host_veth()));

    // --- The default-route NIC from the pod annotation (CNI_ARGS): net1 keeps the default,
    // eth0 takes table 100; the client reaches both NICs. Also: node routes in a host rule
    // table (`hostRuleTable`) and another veth MTU (`vethMTU`).
    let mut e = Pod::new("test-app-e");
    e.args.push_str(";ipam.spidernet.io/default-route-nic=net1");
    let veth_e = bench.veth(json!({
        "service_cidr": [SERVICE_CIDR, SERVICE_CIDR_V6],
        "hostRuleTable": 500,
        "vethMTU": 1400
    }));
    let (e0, e1) = chains(177, Some(&veth_e));
    e.add(&e0, "eth0");
    e.add(&e1, "net1");
    for (ipv6, gw, dev) in [(false, GW_224, "net1"), (true, GW_224_V6, "net1")] {
        let defaults =
            e.ns.ip(&[if ipv6 { "-6" } else { "-4" }, "route", "show", "default"]);
        assert!(
            defaults.contains(&format!("via {gw} dev {dev}")) && !defaults.contains("eth0"),
            "main default is net1's only: {defaults}"
        );
    }
    assert_eq!(
        extra_rules(&e.ns, false),
        [
            "32764: from 10.6.168.177 lookup 100",
            "32765: from all to 10.6.0.0/16 lookup 100"
        ]
    );
    assert!(
        table(&e.ns, false, "100").contains(&"default via 10.6.0.1 dev eth0".to_owned()),
        "{:?}",
        table(&e.ns, false, "100")
    );
    assert_eq!(e.ns.route_get(CLIENT, None).0, "net1");
    assert!(
        node.rules(false)
            .contains(&"1000: from all lookup 500".to_owned())
            && node
                .rules(true)
                .contains(&"1000: from all lookup 500".to_owned()),
        "{:?}",
        node.rules(false)
    );
    let t500 = table(node, true, "500");
    assert!(
        t500.contains(&format!(
            "fd00:7::177 dev {} src {NODE_ENS192_V6}",
            e.host_veth()
        )),
        "{t500:?}"
    );
    assert!(node.ping("10.7.168.177", None) && node.ping("fd00:7::177", None));
    for (ns, dev) in [(&e.ns, "veth0".to_owned()), (node, e.host_veth())] {
        let mtu = ns.ip_json(&["link", "show", "dev", &dev])[0]["mtu"].clone();
        assert_eq!(mtu, 1400, "{dev}");
    }
    for target in ["10.6.168.177", "10.7.168.177", "fd00:6::177", "fd00:7::177"] {
        assert!(client.ping(target, None), "client → pod E {target}");
    }
    assert!(e.ns.ping(NODE_ENS192, None) && e.ns.ping(CLUSTER_IP, None));
    assert_eq!(e.route(&e1, "CHECK", "net1").code, 0);
    assert_eq!(e.route(&e0, "CHECK", "eth0").code, 0);
    // The same pod at CNI 1.1.0 (berth-route alone: Debian's plugins stop at 1.0.0).
    for (chain, nic) in [(&e0, "eth0"), (&e1, "net1")] {
        let mut v11 = chain.clone();
        v11.conflist["cniVersion"] = json!("1.1.0");
        let run = e.route(&v11, "ADD", nic);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.json()["cniVersion"], "1.1.0");
        assert_eq!(
            run.json()["ips"],
            e.results[nic]["ips"],
            "prevResult passed through"
        );
        assert_eq!(e.route(&v11, "CHECK", nic).code, 0);
    }

    // --- GC at CNI 1.1.0 (berth-route alone; Debian's plugins stop at 1.0.0): the node end
    // of a container not listed is deleted, a listed one is kept.
    let mut gc = e0.clone();
    gc.conflist["cniVersion"] = json!("1.1.0");
    let gc_veth = gc.conflist["plugins"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let mut conf = gc.stdin_of(&gc_veth, None);
    conf["cni.dev/valid-attachments"] = json!([{"containerID": b.id, "ifname": "eth0"}]);
    let run = run_gc(&bench, &conf);
    assert_eq!(run.code, 0, "{run:?}");
    let links = node.ip(&["link"]);
    assert!(!links.contains(&e.host_veth()), "GC deleted E's node end");
    assert!(links.contains(&b.host_veth()), "GC kept B's");

    // --- DEL after the pod's namespace is gone: succeeds, nothing of B left on the node.
    let path = b.ns.path();
    berth_test_support::ip(&["netns", "del", b.ns.name()]);
    for (chain, nic) in [(&b1, "net1"), (&b0, "eth0")] {
        let failures = chain.del(&b.a(nic, Some(&path)), b.results.get(nic));
        assert!(
            failures.is_empty(),
            "DEL {nic} after the netns: {failures:?}"
        );
    }
    assert!(!node.ip(&["link"]).contains(&b.host_veth()));
    let all = node.ip(&["-6", "route", "show", "table", "all"]);
    assert!(
        !all.contains("fd00:6::174") && !all.contains("fd00:7::174"),
        "{all}"
    );
    drop(c);
}

/// Runs `berth-route` with `CNI_COMMAND=GC` in the node's namespace.
fn run_gc(bench: &Bench, conf: &serde_json::Value) -> berth_test_support::Outcome {
    use berth_test_support::plugin;
    let cni_path = bench.dir.path().join("bin").display().to_string();
    let env = [("CNI_COMMAND", "GC"), ("CNI_PATH", cni_path.as_str())];
    let command = plugin::command_in(bench.topo.node.name(), BERTH_ROUTE.as_ref(), &env);
    plugin::run(command, &serde_json::to_vec(conf).unwrap())
}
