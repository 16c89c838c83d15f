//! Debian's `macvlan` (containernetworking-plugins 1.1.1) drives `berth-ipam` installed as
//! `spiderpool`, with the seed's config shape, inside network namespaces this test makes:
//! a "node" namespace whose veth end plays the parent `ens192` / `ens224`, and one namespace
//! per pod. Nothing is added to the root namespace.
//!
//! Needs root and `/usr/lib/cni/macvlan`: the `root-tests` feature runs it (scripts/test turns
//! it on as root); otherwise it is ignored. One test function, so the steps run serially; every
//! name is unique (`<prefix>-<pid>-<n>`) and every namespace is deleted by a guard.

mod support;

use std::path::Path;

use berth_test_support::netns::Ns;
use berth_test_support::plugin::{self, Outcome};
use serde_json::{Value, json};
use support::*;

const MACVLAN: &str = "/usr/lib/cni/macvlan";

/// The seed's NAD config for one master, IPAM `spiderpool` in embedded mode.
fn nad(version: &str, network: &str, master: &str, s: &Scratch) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "cniVersion": version,
        "name": network,
        "type": "macvlan",
        "master": master,
        "mode": "bridge",
        "ipam": {
            "type": "spiderpool",
            "data_dir": s.data_dir(),
            "log_file_path": s.log(),
            "log_level": "DEBUG"
        }
    }))
    .unwrap()
}

/// Runs Debian's macvlan inside the node namespace like a runtime would.
fn macvlan(node: &Ns, cni_path: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let cni_path = format!("{}:/usr/lib/cni", cni_path.display());
    let mut env = env.to_vec();
    env.push(("CNI_PATH", &cni_path));
    plugin::run(
        plugin::command_in(node.name(), MACVLAN.as_ref(), &env),
        stdin,
    )
}

fn addresses(pod: &Ns, dev: &str) -> Vec<String> {
    pod.ip_json(&["addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn default_routes(pod: &Ns) -> Vec<(String, String)> {
    pod.ip_json(&["route", "show", "default"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["gateway"].as_str().unwrap_or_default().to_owned(),
                r["dev"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn debian_macvlan_drives_berth_ipam_installed_as_spiderpool() {
    berth_test_support::require(&[MACVLAN]);
    let s = Scratch::new();
    apply(&s.data_dir(), seed_objects("subnets.yaml"));
    apply(&s.data_dir(), seed_objects("deployment.yaml"));
    // berth-ipam installed under the seed's IPAM type name.
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("spiderpool")).unwrap();

    // The node: two parents, veth ends (dummy does not exist on this kernel).
    let node = Ns::new("node");
    for (parent, peer) in [("ens192", "sw192"), ("ens224", "sw224")] {
        node.ip(&["link", "add", parent, "type", "veth", "peer", "name", peer]);
        node.ip(&["link", "set", parent, "up"]);
        node.ip(&["link", "set", peer, "up"]);
    }

    let owner = |pod: &str| {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};\
             K8S_POD_UID=uid-{pod};K8S_POD_INFRA_CONTAINER_ID=x;BERTH_OWNER=Deployment/test-app"
        )
    };

    // ADD of both NICs of one pod at the seed's 0.3.1.
    let pod = Ns::new("pod");
    let pod_ns = pod.path().display().to_string();
    let args = owner("test-app-7d9f-aaaaa");
    let eth0 = nad("0.3.1", "macvlan-conf-ens192", "ens192", &s);
    let net1 = nad("0.3.1", "macvlan-conf-ens224", "ens224", &s);
    let r0 = macvlan(
        &node,
        &bin,
        &attach_env("ADD", "pod1", "eth0", &pod_ns, &args),
        &eth0,
    );
    let r0 = r0.ok();
    assert_eq!(r0["cniVersion"], "0.3.1");
    assert_eq!(r0["ips"][0]["address"], "10.6.168.171/16", "{r0}");
    assert_eq!(r0["ips"][0]["gateway"], "10.6.0.1");
    let r1 = macvlan(
        &node,
        &bin,
        &attach_env("ADD", "pod1", "net1", &pod_ns, &args),
        &net1,
    )
    .ok();
    assert_eq!(r1["ips"][0]["address"], "10.7.168.171/16", "{r1}");
    assert_eq!(addresses(&pod, "eth0"), vec!["10.6.168.171/16"]);
    assert_eq!(addresses(&pod, "net1"), vec!["10.7.168.171/16"]);
    let defaults = default_routes(&pod);
    assert!(
        defaults.contains(&("10.6.0.1".into(), "eth0".into())),
        "{defaults:?}"
    );
    assert!(
        defaults.contains(&("10.7.0.1".into(), "net1".into())),
        "{defaults:?}"
    );
    assert_eq!(held(&s.data_dir()).len(), 2);
    // CHECK needs 0.4.0: refused at 0.3.1.
    let prev = with(&eth0, json!({"prevResult": r0}));
    let e = macvlan(
        &node,
        &bin,
        &attach_env("CHECK", "pod1", "eth0", &pod_ns, &args),
        &prev,
    );
    assert_eq!(e.err()["code"], 1);

    // DEL through macvlan releases the IP and removes the link.
    for (ifname, conf) in [("eth0", &eth0), ("net1", &net1)] {
        macvlan(
            &node,
            &bin,
            &attach_env("DEL", "pod1", ifname, &pod_ns, &args),
            conf,
        )
        .ok();
    }
    assert!(held(&s.data_dir()).is_empty());
    assert!(
        pod.ip_json(&["link", "show"]).as_array().unwrap().len() == 1,
        "only lo left"
    );
    // DEL again succeeds.
    macvlan(
        &node,
        &bin,
        &attach_env("DEL", "pod1", "eth0", &pod_ns, &args),
        &eth0,
    )
    .ok();

    // ADD / CHECK / DEL at 0.3.0, 0.4.0 and 1.0.0 answer in that version.
    for (i, version) in ["0.3.0", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let pod = Ns::new("pod");
        let pod_ns = pod.path().display().to_string();
        let cid = format!("v{i}");
        let args = owner(&format!("test-app-7d9f-v{i}"));
        let conf = nad(version, "macvlan-conf-ens192", "ens192", &s);
        let r = macvlan(
            &node,
            &bin,
            &attach_env("ADD", &cid, "eth0", &pod_ns, &args),
            &conf,
        )
        .ok();
        assert_eq!(r["cniVersion"], version, "{r}");
        assert_eq!(r["ips"].as_array().unwrap().len(), 1);
        assert_eq!(
            r["ips"][0].get("version").is_some(),
            version != "1.0.0",
            "ips[].version only before 1.0.0: {r}"
        );
        let address = r["ips"][0]["address"].as_str().unwrap().to_owned();
        assert!(address.starts_with("10.6.168.17"), "{address}");
        assert_eq!(addresses(&pod, "eth0"), vec![address.clone()]);
        assert_eq!(
            default_routes(&pod),
            vec![("10.6.0.1".to_string(), "eth0".to_string())]
        );
        let prev = with(&conf, json!({"prevResult": r}));
        if version != "0.3.0" {
            macvlan(
                &node,
                &bin,
                &attach_env("CHECK", &cid, "eth0", &pod_ns, &args),
                &prev,
            )
            .ok();
            // Once the IP is released behind the runtime's back, CHECK fails.
            run(&attach_env("DEL", &cid, "eth0", &pod_ns, &args), &conf).ok();
            let e = macvlan(
                &node,
                &bin,
                &attach_env("CHECK", &cid, "eth0", &pod_ns, &args),
                &prev,
            );
            assert_eq!(e.err()["code"], 105);
        }
        let del = macvlan(
            &node,
            &bin,
            &attach_env("DEL", &cid, "eth0", &pod_ns, &args),
            &prev,
        );
        del.ok();
        assert!(held(&s.data_dir()).is_empty(), "{version}");
    }

    // VERSION of the installed name lists all five.
    let v: Value = plugin::run(
        plugin::command(&bin.join("spiderpool"), &[("CNI_COMMAND", "VERSION")]),
        b"",
    )
    .ok();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let log = s.log_text();
    assert!(log.contains("embedded mode in"), "{log}");
}
