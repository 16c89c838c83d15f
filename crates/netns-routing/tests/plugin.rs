//! `berth-route` as a runtime sees it, without namespaces (runs unprivileged): VERSION, the
//! refusals (no `prevResult`, unsupported mode, CHECK before 0.4.0, a missing namespace),
//! and DEL / GC / STATUS with nothing to do. Nothing is changed on the machine: the only
//! netlink traffic is a read of this namespace's links.

use berth_test_support::plugin;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-route");

struct Run {
    code: i32,
    stdout: Value,
}

fn run(env: &[(&str, &str)], stdin: &Value) -> Run {
    let out = plugin::run(
        plugin::command(BIN.as_ref(), env),
        &serde_json::to_vec(stdin).unwrap(),
    );
    Run {
        code: out.code,
        stdout: out.json(),
    }
}

/// A container id whose node end (`vethberthtestno`) exists nowhere.
const CID: &str = "berthtestnoexist0123456789";

fn env<'a>(command: &'a str, ifname: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", CID),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if !netns.is_empty() {
        env.push(("CNI_NETNS", netns));
    }
    env
}

fn conf(version: &str, log: &std::path::Path, extra: Value) -> Value {
    let mut v = json!({
        "cniVersion": version,
        "name": "macvlan-conf-ens224",
        "type": "veth",
        "service_cidr": ["10.96.0.0/12"],
        "log_options": {"log_file": log, "log_level": "debug"},
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn prev() -> Value {
    json!({
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "net1", "mac": "d6:4b:c2:6a:62:0f", "sandbox": "/var/run/netns/x"}],
        "ips": [{"version": "4", "address": "10.7.168.173/16", "gateway": "10.7.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}]
    })
}

#[test]
fn version_lists_all_five() {
    let v = run(&[("CNI_COMMAND", "VERSION")], &Value::Null).stdout;
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("berth-route.log");
    // A chained plugin without prevResult.
    let r = run(
        &env("ADD", "net1", "/var/run/netns/x"),
        &conf("0.3.1", &log, json!({})),
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout["code"], 7);
    assert!(r.stdout["msg"].as_str().unwrap().contains("no prevResult"));
    assert_eq!(r.stdout["cniVersion"], "0.3.1");
    // Overlay mode is not ours.
    let r = run(
        &env("ADD", "net1", "/var/run/netns/x"),
        &conf(
            "1.0.0",
            &log,
            json!({"mode": "overlay", "prevResult": prev()}),
        ),
    );
    assert_eq!(r.stdout["code"], 7, "{}", r.stdout);
    // A CIDR that is not one.
    let r = run(
        &env("ADD", "net1", "/var/run/netns/x"),
        &conf(
            "1.0.0",
            &log,
            json!({"serviceCIDR": ["10.96.0.0/33"], "prevResult": prev()}),
        ),
    );
    assert_eq!(r.stdout["code"], 6, "{}", r.stdout);
    // CHECK needs 0.4.0.
    let r = run(
        &env("CHECK", "net1", "/var/run/netns/x"),
        &conf("0.3.1", &log, json!({"prevResult": prev()})),
    );
    assert_eq!(r.stdout["code"], 1);
    // A namespace that does not exist.
    let missing = dir.path().join("no-such-netns");
    let r = run(
        &env("ADD", "net1", missing.to_str().unwrap()),
        &conf("1.0.0", &log, json!({"prevResult": prev()})),
    );
    assert_eq!(r.stdout["code"], 5, "{}", r.stdout);
    assert_eq!(
        r.stdout["msg"],
        format!("cannot enter the network namespace {}", missing.display())
    );
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("CNI error"),
        "logged to the config's file"
    );
    // Each call's invocation line says which build answered.
    let text = std::fs::read_to_string(&log).unwrap();
    let invocation = text
        .lines()
        .find(|l| l.contains("CNI invocation"))
        .expect("an invocation line");
    assert!(
        invocation.contains(&format!("version=\"{}\"", berth_cni::BUILD)),
        "{invocation}"
    );
}

#[test]
fn nothing_to_undo_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("berth-route.log");
    let gone = dir.path().join("gone");
    let gone = gone.to_str().unwrap();
    for (ifname, netns) in [("eth0", ""), ("eth0", gone), ("net1", gone), ("net1", "")] {
        let r = run(
            &env("DEL", ifname, netns),
            &conf("1.0.0", &log, json!({"prevResult": prev()})),
        );
        assert_eq!(
            (r.code, r.stdout.clone()),
            (0, Value::Null),
            "{ifname} {netns}"
        );
    }
    // DEL at 0.3.1 has no prevResult; a disabled mode does nothing.
    let r = run(&env("DEL", "net1", ""), &conf("0.3.1", &log, json!({})));
    assert_eq!(r.code, 0);
    let r = run(
        &env("ADD", "net1", gone),
        &conf(
            "1.0.0",
            &log,
            json!({"mode": "disabled", "prevResult": prev()}),
        ),
    );
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout["ips"],
        json!([{"address": "10.7.168.173/16", "gateway": "10.7.0.1", "interface": 0}]),
        "prevResult passed through, written at 1.0.0 (no ips[].version)"
    );
    assert_eq!(r.stdout["cniVersion"], "1.0.0");
    // GC without a list of valid attachments releases nothing; STATUS is ready.
    for command in ["GC", "STATUS"] {
        let r = run(
            &[("CNI_COMMAND", command), ("CNI_PATH", "/opt/cni/bin")],
            &conf("1.1.0", &log, json!({})),
        );
        assert_eq!(r.code, 0, "{command}: {}", r.stdout);
    }
}
