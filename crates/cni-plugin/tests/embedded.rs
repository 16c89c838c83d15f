//! `berth-ipam` in embedded mode, run as a process exactly like a runtime runs it: the CNI
//! commands and versions, the seed's story with `BERTH_OWNER`, bad input, CNI GC, STATUS.
//! No root needed: an IPAM plugin never touches the netns, so `CNI_NETNS` is a plain file.

mod support;

use std::path::Path;

use ipam_core::store::Store;
use ipam_core::{Kind, WorkloadKind};
use serde_json::{Value, json};
use support::*;

const NET: &str = "macvlan-conf-ens192";
const NET1: &str = "macvlan-conf-ens224";

/// Every object of every kind, as stored.
fn dump(data_dir: &Path) -> Vec<Value> {
    with_engine(data_dir, async |e| {
        let mut all = Vec::new();
        for kind in Kind::ALL {
            all.extend(e.store().list(kind, None, None).await.unwrap());
        }
        all
    })
}

#[test]
fn version_lists_all_five() {
    for stdin in [&b""[..], b"garbage"] {
        let out = run(&[("CNI_COMMAND", "VERSION")], stdin);
        assert_eq!(
            out.ok(),
            json!({
                "cniVersion": "1.1.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            })
        );
    }
}

#[test]
fn add_check_del_in_every_version() {
    let s = Scratch::new();
    apply(&s.data_dir(), vec![pool("pool-a", "10.66.0.10-10.66.0.20")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    let ns = s.fake_netns("c");
    let ns = ns.to_str().unwrap();
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_UID=u-1";
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let cid = format!("c{i}");
        let conf = conf(version, NET, ipam.clone());
        let add = run(&attach_env("ADD", &cid, "eth0", ns, args), &conf);
        let result = add.ok();
        let ip = format!("10.66.0.{}", 10 + i);
        let mut expected_ip = json!({"address": format!("{ip}/16"), "gateway": "10.66.0.1"});
        if version.starts_with('0') {
            expected_ip["version"] = json!("4");
        }
        assert_eq!(
            result,
            json!({
                "cniVersion": version,
                "ips": [expected_ip],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.66.0.1"}]
            }),
            "{version}"
        );
        // A retried ADD answers the same.
        let again = run(&attach_env("ADD", &cid, "eth0", ns, args), &conf);
        assert_eq!(again.ok(), result, "{version}");

        let prev = with(&conf, json!({"prevResult": result}));
        let check = run(&attach_env("CHECK", &cid, "eth0", ns, args), &prev);
        if *version < "0.4.0" {
            assert_eq!(check.err()["code"], 1, "CHECK needs 0.4.0: {version}");
        } else {
            assert_eq!(check.ok(), Value::Null, "{version}");
            // Another container's address is not ours.
            let mut wrong = result.clone();
            wrong["ips"][0]["address"] = json!("10.66.0.99/16");
            let bad = with(&conf, json!({"prevResult": wrong}));
            let e = run(&attach_env("CHECK", &cid, "eth0", ns, args), &bad).err();
            assert_eq!(e["code"], 105, "{e}");
            assert_eq!(e["cniVersion"], *version);
        }

        let del = run(&attach_env("DEL", &cid, "eth0", ns, args), &prev);
        assert_eq!(del.ok(), Value::Null);
        assert_eq!(del.stdout, b"", "DEL prints nothing");
        // DEL twice, and DEL of a container never seen, succeed.
        run(&attach_env("DEL", &cid, "eth0", ns, args), &prev).ok();
        run(&attach_env("DEL", "never-seen", "eth0", ns, ""), &conf).ok();
        if *version >= "0.4.0" {
            let gone = run(&attach_env("CHECK", &cid, "eth0", ns, args), &prev).err();
            assert_eq!(gone["code"], 105);
        }
    }
    assert!(held(&s.data_dir()).is_empty());
    let log = s.log_text();
    assert!(
        log.contains("embedded mode in"),
        "the mode is logged: {log}"
    );
    assert!(log.contains("allocated"), "{log}");
}

#[test]
fn pod_identity_without_kubernetes_args() {
    let s = Scratch::new();
    apply(&s.data_dir(), vec![pool("pool-a", "10.66.0.10-10.66.0.20")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    let ns = s.fake_netns("podman");
    let ns = ns.to_str().unwrap();
    let conf = conf("1.0.0", NET, ipam);
    let cid = "9c2f4e0b7a31d6e8f1c0";
    run(&attach_env("ADD", cid, "eth0", ns, ""), &conf).ok();
    let records = records(&s.data_dir());
    let r = &records["pool-a"][&"10.66.0.10".parse().unwrap()];
    assert_eq!(r.pod, format!("default/ctr-{cid}"));
    assert_eq!(r.pod_uid, cid);
    assert_eq!(r.container_id.as_deref(), Some(cid));
    assert_eq!(r.interface.as_deref(), Some("eth0"));
    assert_eq!(r.network.as_deref(), Some(NET));
    assert_eq!(r.netns.as_deref(), Some(ns));
    run(&attach_env("DEL", cid, "eth0", ns, ""), &conf).ok();
    assert!(held(&s.data_dir()).is_empty());
}

#[test]
fn the_seed_story_through_the_binary() {
    let s = Scratch::new();
    let dir = s.data_dir();
    apply(&dir, seed_objects("subnets.yaml"));
    apply(&dir, seed_objects("deployment.yaml"));
    let ipam = s.embedded_ipam();
    let eth0 = conf("0.3.1", NET, ipam.clone());
    let net1 = conf("0.3.1", NET1, ipam.clone());
    let ns = s.fake_netns("seed");
    let ns = ns.to_str().unwrap();
    let pod = |name: &str| {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID=uid-{name};BERTH_OWNER=Deployment/test-app"
        )
    };
    let add = |cid: &str, name: &str| {
        let a = run(&attach_env("ADD", cid, "eth0", ns, &pod(name)), &eth0);
        let b = run(&attach_env("ADD", cid, "net1", ns, &pod(name)), &net1);
        (a, b)
    };
    let auto = |prefix: &str| -> (String, ipam_core::IpSet) {
        let p = pools(&dir);
        let (name, pool) = p
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no pool {prefix}*: {:?}", p.keys()));
        (name.clone(), pool.spec.ips.clone())
    };

    let (a, b) = add("c1", "test-app-7d9f-aaaaa");
    assert_eq!(
        a.ok(),
        json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.6.168.171/16", "gateway": "10.6.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.6.0.1"}]
        })
    );
    assert_eq!(b.ok()["ips"][0]["address"], "10.7.168.171/16");
    assert_eq!(b.ok()["routes"][0]["gw"], "10.7.0.1");
    let (eth0_pool, eth0_ips) = auto("auto4-test-app-eth0-");
    let (net1_pool, _) = auto("auto4-test-app-net1-");
    assert_eq!(eth0_ips, ipam_core::ips!["10.6.168.171-10.6.168.173"]);
    let records = records(&dir);
    let r = &records[&eth0_pool][&"10.6.168.171".parse().unwrap()];
    assert_eq!(r.network.as_deref(), Some(NET));
    let r = &records[&net1_pool][&"10.7.168.171".parse().unwrap()];
    assert_eq!(r.network.as_deref(), Some(NET1));

    // Two replicas and the +1 spare fit; a fourth pod does not, and changes nothing.
    let (a, b) = add("c2", "test-app-7d9f-bbbbb");
    assert_eq!(a.ip().to_string(), "10.6.168.172");
    assert_eq!(b.ip().to_string(), "10.7.168.172");
    let (a, _) = add("c3", "test-app-7d9f-ccccc");
    assert_eq!(a.ip().to_string(), "10.6.168.173");
    let before = dump(&dir);
    let refused = run(
        &attach_env("ADD", "c4", "eth0", ns, &pod("test-app-7d9f-ddddd")),
        &eth0,
    );
    let e = refused.err();
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains(&eth0_pool), "{e}");
    assert_eq!(dump(&dir), before, "a refused ADD changes nothing");

    // A restarted pod (DEL, then a new sandbox) stays inside the pool.
    for ifname in ["eth0", "net1"] {
        let c = if ifname == "eth0" { &eth0 } else { &net1 };
        run(
            &attach_env("DEL", "c1", ifname, ns, &pod("test-app-7d9f-aaaaa")),
            c,
        )
        .ok();
    }
    let (a, b) = add("c1b", "test-app-7d9f-aaaaa");
    assert!(eth0_ips.contains(&a.ip()), "{} in {eth0_ips}", a.ip());
    assert!(b.ip().to_string().starts_with("10.7.168.17"));

    // Scaling to 3 grows the pools: the fourth pod fits now.
    with_engine(&dir, async |e| {
        e.scale(WorkloadKind::Deployment, "default", "test-app", 3)
            .await
            .unwrap()
    });
    let (a, b) = add("c4", "test-app-7d9f-ddddd");
    let (_, grown) = auto("auto4-test-app-eth0-");
    assert_eq!(grown.len(), 4);
    assert!(grown.contains(&a.ip()));
    b.ok();

    // A StatefulSet pod gets its IPs back after a restart (new sandbox, new uid).
    apply(&dir, seed_objects("statefulset.yaml"));
    let sts = |uid: &str| {
        format!(
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=test-sts-0;K8S_POD_UID={uid};BERTH_OWNER=sts/test-sts"
        )
    };
    let first = (
        run(&attach_env("ADD", "s1", "eth0", ns, &sts("u1")), &eth0).ip(),
        run(&attach_env("ADD", "s1", "net1", ns, &sts("u1")), &net1).ip(),
    );
    run(&attach_env("DEL", "s1", "eth0", ns, &sts("u1")), &eth0).ok();
    run(&attach_env("DEL", "s1", "net1", ns, &sts("u1")), &net1).ok();
    // Another StatefulSet pod in between does not get them.
    let other = run(
        &attach_env(
            "ADD",
            "s9",
            "eth0",
            ns,
            &sts("u9").replace("test-sts-0", "test-sts-1"),
        ),
        &eth0,
    )
    .ip();
    assert_ne!(other, first.0);
    let again = (
        run(&attach_env("ADD", "s2", "eth0", ns, &sts("u2")), &eth0).ip(),
        run(&attach_env("ADD", "s2", "net1", ns, &sts("u2")), &net1).ip(),
    );
    assert_eq!(again, first);
    assert!(safety(&dir).is_empty(), "{:?}", safety(&dir));
}

#[test]
fn unknown_owner_is_code_104_naming_it() {
    let s = Scratch::new();
    apply(&s.data_dir(), seed_objects("subnets.yaml"));
    let ns = s.fake_netns("o");
    let before = dump(&s.data_dir());
    let out = run(
        &attach_env(
            "ADD",
            "c1",
            "eth0",
            ns.to_str().unwrap(),
            "K8S_POD_NAME=p;BERTH_OWNER=Deployment/nope",
        ),
        &conf("0.3.1", NET, s.embedded_ipam()),
    );
    let e = out.err();
    assert_eq!(e["code"], 104, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("Deployment/nope") && msg.contains("berth apply"),
        "{msg}"
    );
    assert_eq!(dump(&s.data_dir()), before);
}

#[test]
fn bad_input_is_a_cni_error_and_changes_nothing() {
    let s = Scratch::new();
    let dir = s.data_dir();
    apply(&dir, vec![pool("tiny", "10.66.0.10-10.66.0.11")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["tiny"]);
    let good = conf("0.3.1", NET, ipam.clone());
    let ns = s.fake_netns("bad");
    let ns = ns.to_str().unwrap();
    run(&attach_env("ADD", "c1", "eth0", ns, ""), &good).ok();
    run(&attach_env("ADD", "c2", "eth0", ns, ""), &good).ok();
    let before = dump(&dir);

    let mut unknown_pool = ipam.clone();
    unknown_pool["default_ipv4_ippool"] = json!(["no-such-pool"]);
    // (what, env, stdin, expected code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u64);
    let cases: Vec<Case> = vec![
        (
            "garbage JSON",
            attach_env("ADD", "c3", "eth0", ns, ""),
            b"{garbage".to_vec(),
            6,
        ),
        (
            "unknown cniVersion",
            attach_env("ADD", "c3", "eth0", ns, ""),
            conf("9.9.9", NET, ipam.clone()),
            1,
        ),
        (
            "missing CNI_COMMAND",
            attach_env("ADD", "c3", "eth0", ns, "")[1..].to_vec(),
            good.clone(),
            4,
        ),
        (
            "unknown pool",
            attach_env("ADD", "c3", "eth0", ns, ""),
            conf("0.3.1", NET, unknown_pool),
            101,
        ),
        (
            "invalid container id",
            attach_env("ADD", "../c3", "eth0", ns, ""),
            good.clone(),
            4,
        ),
        (
            "invalid ifname",
            attach_env("ADD", "c3", "eth0;rm", ns, ""),
            good.clone(),
            4,
        ),
        (
            "exhausted pool",
            attach_env("ADD", "c3", "eth0", ns, ""),
            good.clone(),
            100,
        ),
        (
            "unknown CNI_ARGS",
            attach_env("ADD", "c3", "eth0", ns, "FOO=bar"),
            good.clone(),
            2,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let out = run(&env, &stdin);
        let e = out.err();
        assert_eq!(e["code"], code, "{what}: {e}");
        assert!(!e["msg"].as_str().unwrap().is_empty(), "{what}");
        assert_eq!(dump(&dir), before, "{what} changed the store");
    }
    let e = run(&attach_env("ADD", "c3", "eth0", ns, ""), &good).err();
    assert!(
        e["msg"].as_str().unwrap().contains("tiny"),
        "names the pool: {e}"
    );
}

#[test]
fn cni_gc_releases_exactly_the_stale_attachments_of_that_network() {
    let s = Scratch::new();
    let dir = s.data_dir();
    apply(&dir, vec![pool("pool-a", "10.66.0.10-10.66.0.30")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    let net_a = conf("1.1.0", "net-a", ipam.clone());
    let net_b = conf("1.1.0", "net-b", ipam.clone());
    let ns = s.fake_netns("gc");
    let ns = ns.to_str().unwrap();
    for (cid, ifname, c) in [
        ("c1", "eth0", &net_a),
        ("c1", "net1", &net_b),
        ("c2", "eth0", &net_a),
        ("c3", "eth0", &net_a),
        ("c4", "eth0", &net_b),
    ] {
        run(&attach_env("ADD", cid, ifname, ns, ""), c).ok();
    }
    let holders = |dir: &Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = records(dir)
            .into_values()
            .flat_map(|r| r.into_values())
            .map(|r| (r.container_id.unwrap(), r.interface.unwrap()))
            .collect();
        v.sort();
        v
    };
    let gc = |c: &[u8], extra: Value| run(&[("CNI_COMMAND", "GC")], &with(c, extra));
    // Without the key, nothing is released.
    gc(&net_a, json!({})).ok();
    assert_eq!(holders(&dir).len(), 5);
    // net-a keeps c1/eth0 only; net-b's attachments are not its business.
    gc(
        &net_a,
        json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
    )
    .ok();
    assert_eq!(
        holders(&dir),
        [("c1", "eth0"), ("c1", "net1"), ("c4", "eth0")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // The spec-v1.1.0 key name works too; an empty list releases the whole network.
    gc(
        &net_b,
        json!({"cni.dev/attachments": [{"containerID": "c4", "ifname": "eth0"}]}),
    )
    .ok();
    assert_eq!(holders(&dir).len(), 2);
    gc(&net_b, json!({"cni.dev/valid-attachments": null})).ok();
    assert_eq!(holders(&dir), vec![("c1".to_string(), "eth0".to_string())]);
    // GC below 1.1.0 is refused.
    let e = run(&[("CNI_COMMAND", "GC")], &conf("1.0.0", "net-a", ipam)).err();
    assert_eq!(e["code"], 1);
}

#[test]
fn status_says_whether_the_store_answers() {
    let s = Scratch::new();
    let ok = conf("1.1.0", NET, s.embedded_ipam());
    assert_eq!(run(&[("CNI_COMMAND", "STATUS")], &ok).ok(), Value::Null);
    // A data dir that cannot be a directory.
    let file = s.dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let mut ipam = s.embedded_ipam();
    ipam["data_dir"] = json!(file);
    let e = run(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0", NET, ipam)).err();
    assert_eq!(e["code"], 50, "{e}");
}

#[test]
fn logs_go_to_the_log_file_and_stdout_holds_only_the_answer() {
    let s = Scratch::new();
    apply(&s.data_dir(), vec![pool("pool-a", "10.66.0.10-10.66.0.20")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    let ns = s.fake_netns("log");
    let out = run(
        &attach_env("ADD", "c1", "eth0", ns.to_str().unwrap(), ""),
        &conf("1.0.0", NET, ipam.clone()),
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.starts_with('{') && text.ends_with('}'), "{text:?}");
    out.ok();
    assert_eq!(
        out.stderr, "",
        "nothing on stderr either when the log file opens"
    );
    // A refused config is logged too (logging is set up before the config is checked).
    let refused = run(
        &attach_env("ADD", "c1", "eth0", ns.to_str().unwrap(), ""),
        &conf("9.9.9", NET, ipam),
    );
    refused.err();
    let log = s.log_text();
    assert!(
        log.contains("IPAM mode") && log.contains("CNI invocation"),
        "{log}"
    );
    assert!(log.contains("incompatible CNI versions"), "{log}");
    // The invocation line says which build answered: version and git commit.
    let invocation = log
        .lines()
        .find(|l| l.contains("CNI invocation"))
        .expect("an invocation line");
    assert!(
        invocation.contains(&format!("version=\"{}\"", berth_cni::BUILD)),
        "{invocation}"
    );
}

#[test]
fn at_info_each_call_is_one_line_saying_what_it_did() {
    let s = Scratch::new();
    apply(&s.data_dir(), vec![pool("pool-a", "10.66.0.10-10.66.0.20")]);
    let mut ipam = s.embedded_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    ipam["log_level"] = json!("INFO");
    let ns = s.fake_netns("one-line");
    let ns = ns.to_str().unwrap();
    let good = conf("1.0.0", NET, ipam.clone());
    run(&attach_env("ADD", "c1", "eth0", ns, ""), &good).ok();
    run(&attach_env("DEL", "c1", "eth0", ns, ""), &good).ok();
    ipam["default_ipv4_ippool"] = json!(["no-such-pool"]);
    run(
        &attach_env("ADD", "c2", "net1", ns, ""),
        &conf("1.0.0", NET, ipam),
    )
    .err();
    let log = s.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    let says = |line: &str, words: &[&str]| {
        for w in words {
            assert!(line.contains(w), "{w:?} not in {line:?}");
        }
    };
    let common = [&format!("network={NET}")[..], "elapsed="];
    says(
        lines[0],
        &[
            " INFO ",
            "CNI ADD ok",
            "container_id=c1",
            "ifname=eth0",
            "ips=10.66.0.10/16",
        ],
    );
    says(lines[0], &common);
    says(
        lines[1],
        &[" INFO ", "CNI DEL ok", "container_id=c1", "ifname=eth0"],
    );
    says(lines[1], &common);
    says(
        lines[2],
        &[
            " WARN ",
            "CNI ADD failed",
            "container_id=c2",
            "ifname=net1",
            "code=",
        ],
    );
    says(lines[2], &common);
    assert!(!lines[1].contains("ips="), "{}", lines[1]);
}
