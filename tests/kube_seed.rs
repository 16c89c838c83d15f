//! `cargo run --example cluster` (the seed on a real control plane) holds every step, and what
//! it prints says so: read back from its `POD <name> <nic>=<ip>` lines and tables, not from
//! its own checks.
//!
//! The example applies the seed's YAML through the API server, runs `berth controller
//! --webhook` and one `berth agent` per simulated node under their service accounts' RBAC
//! (`deploy/rbac.yaml`), and the kubelet stand-ins call the IPAM plugin through the CNI
//! protocol. Here: the pods' IPs lie in the seed's ranges and are unique; the replacement of a
//! deleted pod stays inside the range; scaling to 3 gives a third pod; a restarted StatefulSet
//! pod has its IPs back; after both workloads are deleted no auto pool is left and every IP
//! is back in its subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

mod support;

/// One `POD` line: name → {nic → ip}.
fn pod_line(line: &str) -> Option<(String, BTreeMap<String, Ipv4Addr>)> {
    let mut words = line.strip_prefix("POD ")?.split_whitespace();
    let name = words.next()?.to_string();
    let nics = words
        .filter_map(|w| w.split_once('='))
        .map(|(nic, ip)| (nic.to_string(), ip.parse().expect("an IPv4 address")))
        .collect();
    Some((name, nics))
}

/// The output split at its `==== step` headers: (title, lines).
fn steps(output: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in output.lines() {
        if let Some(title) = line.strip_prefix("==== ") {
            out.push((title.to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

fn in_seed_range(nic: &str, ip: Ipv4Addr) -> bool {
    let (first, last) = match nic {
        "eth0" => ([10, 6, 168, 171], [10, 6, 168, 180]),
        "net1" => ([10, 7, 168, 171], [10, 7, 168, 180]),
        _ => return false,
    };
    (Ipv4Addr::from(first)..=Ipv4Addr::from(last)).contains(&ip)
}

/// The pods of a step's `POD` lines (the "before" line excluded), checked: both NICs, seed
/// ranges, no IP twice.
fn pods_of(lines: &[String]) -> BTreeMap<String, BTreeMap<String, Ipv4Addr>> {
    let pods: BTreeMap<_, _> = lines
        .iter()
        .filter(|l| !l.contains("(before the restart)"))
        .filter_map(|l| pod_line(l))
        .collect();
    let mut seen = BTreeSet::new();
    for (name, nics) in &pods {
        assert_eq!(
            nics.keys().map(String::as_str).collect::<Vec<_>>(),
            ["eth0", "net1"],
            "{name}"
        );
        for (nic, ip) in nics {
            assert!(in_seed_range(nic, *ip), "{name} {nic}={ip}");
            assert!(seen.insert(*ip), "{ip} is held twice: {pods:?}");
        }
    }
    pods
}

#[test]
fn the_seed_story_holds_on_a_real_control_plane() {
    let out = Command::new(support::example("cluster"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("cluster: every step held"));
    let steps = steps(&stdout);
    let titles: Vec<&str> = steps.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles.len(), 6, "{titles:?}");
    let apps = |pods: &BTreeMap<String, BTreeMap<String, Ipv4Addr>>, prefix: &str| {
        pods.keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect::<BTreeSet<String>>()
    };

    let seed = pods_of(&steps[1].1);
    let first = apps(&seed, "test-app-");
    assert_eq!(first.len(), 2, "{seed:?}");

    let replaced = pods_of(&steps[2].1);
    let second = apps(&replaced, "test-app-");
    assert_eq!(second.len(), 2, "{replaced:?}");
    assert_eq!(
        first.intersection(&second).count(),
        1,
        "one pod was replaced"
    );

    let scaled = pods_of(&steps[3].1);
    assert_eq!(apps(&scaled, "test-app-").len(), 3, "{scaled:?}");

    let sts_lines = &steps[4].1;
    let before = sts_lines
        .iter()
        .find(|l| l.contains("(before the restart)"))
        .and_then(|l| pod_line(l))
        .expect("the StatefulSet pod before its restart");
    let after = pods_of(sts_lines);
    assert_eq!(before.0, "test-sts-0");
    assert_eq!(after["test-sts-0"], before.1, "test-sts-0 kept its IPs");
    assert_eq!(apps(&after, "test-sts-").len(), 2);

    // The end: no auto pool, and every subnet row shows 0 of 10 IPs allocated.
    let end = &steps[5].1;
    let subnets: Vec<&String> = end
        .iter()
        .filter(|l| l.starts_with("subnet-test-ens"))
        .collect();
    assert_eq!(subnets.len(), 2, "{end:?}");
    for row in subnets {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[cols.len() - 2..], ["0", "10"], "{row}");
    }
    assert!(!end.iter().any(|l| l.starts_with("auto4-")), "{end:?}");
    assert!(end.iter().any(|l| l.contains("0 CNI errors")), "{end:?}");
}
