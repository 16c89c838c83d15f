//! The CRDs on a real API server (crates/kube-testbed): `deploy/crds/` installs with kubectl and
//! becomes Established; the seed's YAML applies; kubectl shows Spiderpool's columns (the seed's
//! listings, line for line); objects written as Spiderpool writes them come back intact, with the
//! status subresource where Spiderpool has one and without where it has none.

mod support;

use std::io::Write;
use std::process::Stdio;

use ipam_core::{IpRecord, SpiderIPPool, ips};
use ipam_store_k8s::v2beta1;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::crd::v1::CustomResourceExt;
use kube_testbed::{Cluster, Options, SharedCluster, unique_name};
use serde_json::{Value, json};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

/// The shared cluster with `deploy/crds/` applied by kubectl and established.
async fn cluster() -> &'static Cluster {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = CLUSTER.get().await;
    INSTALLED
        .get_or_init(|| async {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crds");
            kubectl(cluster, &["apply", "-f", dir], None);
            support::established(cluster).await;
        })
        .await;
    cluster
}

/// Runs kubectl (with `input` on stdin) and returns its stdout; panics with its stderr.
fn kubectl(cluster: &Cluster, args: &[&str], input: Option<&str>) -> String {
    let out = try_kubectl(cluster, args, input);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn try_kubectl(cluster: &Cluster, args: &[&str], input: Option<&str>) -> std::process::Output {
    let mut child = cluster
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn seed(file: &str) -> String {
    let path = format!("{}/../../examples/seed/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

fn pools(cluster: &Cluster) -> Api<DynamicObject> {
    Api::all_with(
        cluster.client().unwrap(),
        &v2beta1::SpiderIPPool::api_resource(),
    )
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// The API error code of a refused write.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("the API server should refuse this: {other:?}"),
    }
}

#[tokio::test]
async fn the_api_server_serves_spiderpools_names_scopes_and_subresources() {
    let cluster = cluster().await;
    let resources = kubectl(
        cluster,
        &[
            "api-resources",
            "--api-group=spiderpool.spidernet.io",
            "-o",
            "wide",
            "--no-headers",
            "--sort-by=name",
        ],
        None,
    );
    let rows: Vec<Vec<&str>> = resources
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // NAME SHORTNAMES APIVERSION NAMESPACED KIND VERBS CATEGORIES
    let verbs = "delete,deletecollection,get,list,patch,create,update,watch";
    let expected: Vec<Vec<&str>> = [
        "spiderendpoints se spiderpool.spidernet.io/v2beta1 true SpiderEndpoint",
        "spiderippools sp spiderpool.spidernet.io/v2beta1 false SpiderIPPool",
        "spiderreservedips sr spiderpool.spidernet.io/v2beta1 false SpiderReservedIP",
        "spidersubnets ss spiderpool.spidernet.io/v2beta1 false SpiderSubnet",
    ]
    .iter()
    .map(|row| {
        row.split_whitespace()
            .chain([verbs, "spiderpool"])
            .collect()
    })
    .collect();
    assert_eq!(rows, expected, "{resources}");

    // Status subresources: pools and subnets only, as in Spiderpool.
    let discovery: Value = serde_json::from_str(&kubectl(
        cluster,
        &["get", "--raw", "/apis/spiderpool.spidernet.io/v2beta1"],
        None,
    ))
    .unwrap();
    let mut served: Vec<&str> = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            "spiderendpoints",
            "spiderippools",
            "spiderippools/status",
            "spiderreservedips",
            "spidersubnets",
            "spidersubnets/status",
        ]
    );
}

#[tokio::test]
async fn the_seeds_yaml_applies_and_kubectl_shows_the_seeds_listings() {
    let cluster = cluster().await;
    // kubectl validates strictly by default, and the seed's YAML sets `vlan: 0`, a field
    // Spiderpool v1.2's CRDs no longer have: Berth's still accept it, so the seed applies as
    // written, with no warning.
    let applied = try_kubectl(cluster, &["apply", "-f", "-"], Some(&seed("subnets.yaml")));
    assert!(applied.status.success(), "{applied:?}");
    let warnings = String::from_utf8_lossy(&applied.stderr);
    assert!(!warnings.contains("unknown field"), "{warnings}");
    // What the seed's Spiderpool wrote into the status subresource.
    for name in ["subnet-test-ens192", "subnet-test-ens224"] {
        kubectl(
            cluster,
            &[
                "patch",
                "ss",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"allocatedIPCount":3,"totalIPCount":10}}"#,
            ],
            None,
        );
    }
    assert_eq!(
        kubectl(
            cluster,
            &[
                "get",
                "spidersubnet",
                "subnet-test-ens192",
                "subnet-test-ens224"
            ],
            None
        ),
        "NAME                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT\n\
         subnet-test-ens192   4         10.6.0.1/16   3                    10\n\
         subnet-test-ens224   4         10.7.0.1/16   3                    10\n"
    );

    // The seed's two auto pools, with two of their three IPs held (spec.default and
    // spec.disable come from the CRD's defaults, as with Spiderpool).
    for (name, nic, subnet, ips) in [
        ("eth0", "ens192", "10.6.0.1/16", "10.6.168.171-10.6.168.173"),
        ("net1", "ens224", "10.7.0.1/16", "10.7.168.171-10.7.168.173"),
    ]
    .map(|(nic, ens, subnet, ips)| {
        (
            format!("auto-test-app-v4-{nic}-b1a361c7e9df"),
            ens,
            subnet,
            ips,
        )
    }) {
        let pool = json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1",
            "kind": "SpiderIPPool",
            "metadata": {"name": name, "labels": {"ipam.spidernet.io/owner-spider-subnet": format!("subnet-test-{nic}")}},
            "spec": {
                "ipVersion": 4,
                "subnet": subnet,
                "ips": [ips],
                "podAffinity": {"matchLabels": {"ipam.spidernet.io/app-namespace": "default"}},
                "multusName": [format!("kube-system/macvlan-conf-{nic}")],
                "nodeName": ["node1"],
            },
        });
        kubectl(cluster, &["apply", "-f", "-"], Some(&pool.to_string()));
        kubectl(
            cluster,
            &[
                "patch",
                "sp",
                &name,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"allocatedIPCount":2,"totalIPCount":3}}"#,
            ],
            None,
        );
    }
    let names = [
        "auto-test-app-v4-eth0-b1a361c7e9df",
        "auto-test-app-v4-net1-b1a361c7e9df",
    ];
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "spiderippool"];
        args.extend(names);
        args.extend(extra);
        kubectl(cluster, &args, None)
    };
    assert_eq!(
        get(&[]),
        "NAME                                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT   DEFAULT   DISABLE\n\
         auto-test-app-v4-eth0-b1a361c7e9df   4         10.6.0.1/16   2                    3                false     false\n\
         auto-test-app-v4-net1-b1a361c7e9df   4         10.7.0.1/16   2                    3                false     false\n"
    );
    // kubectl writes every column name in capitals: Spiderpool's NodeName and MultusName too.
    let wide = get(&["-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT",
            "DEFAULT",
            "DISABLE",
            "NODENAME",
            "MULTUSNAME",
            "APP-NAMESPACE"
        ]
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "auto-test-app-v4-eth0-b1a361c7e9df",
            "4",
            "10.6.0.1/16",
            "2",
            "3",
            "false",
            "false",
            "[\"node1\"]",
            "[\"kube-system/macvlan-conf-ens192\"]",
            "default"
        ]
    );

    // The category lists every kind.
    let all = kubectl(cluster, &["get", "spiderpool", "-o", "name"], None);
    for object in [
        "spiderippool.spiderpool.spidernet.io/auto-test-app-v4-eth0-b1a361c7e9df",
        "spidersubnet.spiderpool.spidernet.io/subnet-test-ens192",
    ] {
        assert!(all.lines().any(|l| l == object), "{all}");
    }
}

#[tokio::test]
async fn a_pool_written_as_spiderpool_writes_it_keeps_its_status_in_the_subresource() {
    let cluster = cluster().await;
    let api = pools(cluster);
    let pp = PostParams::default();
    let name = unique_name("spiderpool-written");
    // Go's encoding/json of PoolIPAllocations: keys sorted, no spaces.
    let allocated = r#"{"10.6.168.10":{"pod":"default/web-1","podUid":"u-1"},"10.6.168.9":{"pod":"default/web-0","podUid":"u-0"}}"#;
    let status = json!({"allocatedIPs": allocated, "allocatedIPCount": 2, "totalIPCount": 3});
    let pool = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name},
        "spec": {"ipVersion": 4, "subnet": "10.6.0.0/16", "ips": ["10.6.168.8-10.6.168.10"]},
        "status": status,
    });

    // A create ignores the status (it is a subresource); the CRD's defaults fill the spec.
    let created = api.create(&pp, &object(pool.clone())).await.unwrap();
    assert_eq!(created.data.get("status"), None);
    assert_eq!(created.data["spec"]["default"], false);
    assert_eq!(created.data["spec"]["disable"], false);

    // Spiderpool's agent writes the status through /status: only the status changes.
    let mut with_status = created.clone();
    with_status.data["status"] = status.clone();
    with_status.data["spec"]["gateway"] = json!("10.6.0.1");
    let written = api.replace_status(&name, &pp, &with_status).await.unwrap();
    assert_eq!(written.data["status"], status);
    assert_eq!(written.data["spec"].get("gateway"), None);

    // Read back: the string is the one written, byte for byte, and both models read it.
    let read = api.get(&name).await.unwrap();
    assert_eq!(read.data["status"]["allocatedIPs"], allocated);
    let mut as_json = serde_json::to_value(&read).unwrap();
    as_json["metadata"] = json!({"name": name});
    let core: SpiderIPPool = serde_json::from_value(as_json).unwrap();
    let holders: Vec<(String, String)> = core
        .records()
        .into_iter()
        .map(|(ip, r)| (ip.to_string(), r.pod))
        .collect();
    assert_eq!(
        holders,
        [
            ("10.6.168.9".to_string(), "default/web-0".to_string()),
            ("10.6.168.10".to_string(), "default/web-1".to_string())
        ]
    );
    let typed: Api<v2beta1::SpiderIPPool> = Api::all(cluster.client().unwrap());
    let typed = typed.get(&name).await.unwrap();
    assert_eq!(typed.status.unwrap().allocated_ip_count, Some(2));

    // A spec update leaves the status alone.
    let mut spec_only = read.clone();
    spec_only.data["spec"]["gateway"] = json!("10.6.0.1");
    spec_only.data["status"] = json!({"allocatedIPCount": 0});
    let replaced = api.replace(&name, &pp, &spec_only).await.unwrap();
    assert_eq!(replaced.data["spec"]["gateway"], "10.6.0.1");
    assert_eq!(replaced.data["status"], status);
}

#[tokio::test]
async fn a_pool_berth_writes_reads_as_spiderpool_reads_it_but_for_lastallocatedip() {
    let cluster = cluster().await;
    let api = pools(cluster);
    let pp = PostParams::default();
    let name = unique_name("berth-written");
    let mut pool = SpiderIPPool::new(
        &name,
        "10.7.0.0/16".parse().unwrap(),
        ips!["10.7.168.171-10.7.168.180"],
    );
    pool.spec.ip_version = Some(4);
    let record = |pod: &str, uid: &str, container: &str| IpRecord {
        pod: pod.into(),
        pod_uid: uid.into(),
        container_id: Some(container.into()),
        interface: Some("net1".into()),
        network: Some("macvlan-conf-ens224".into()),
        netns: None,
    };
    pool.set_records(
        [
            (
                "10.7.168.171".parse().unwrap(),
                record("default/a", "u-a", "c-a"),
            ),
            (
                "10.7.168.172".parse().unwrap(),
                record("default/b", "u-b", "c-b"),
            ),
        ]
        .into(),
    );
    pool.status.as_mut().unwrap().last_allocated_ip = Some("10.7.168.172".parse().unwrap());
    let json = serde_json::to_value(&pool).unwrap();

    let created = api.create(&pp, &object(json.clone())).await.unwrap();
    let mut with_status = created.clone();
    with_status.data["status"] = json["status"].clone();
    api.replace_status(&name, &pp, &with_status).await.unwrap();

    // Spiderpool's reading: pod and podUid of each IP.
    let typed: Api<v2beta1::SpiderIPPool> = Api::all(cluster.client().unwrap());
    let theirs = typed.get(&name).await.unwrap().status.unwrap();
    let holders: Vec<String> = theirs
        .allocations()
        .unwrap()
        .into_iter()
        .map(|(ip, a)| format!("{ip} {} {}", a.pod, a.pod_uid))
        .collect();
    assert_eq!(
        holders,
        ["10.7.168.171 default/a u-a", "10.7.168.172 default/b u-b"]
    );
    assert_eq!(theirs.allocated_ip_count, Some(2));
    assert_eq!(theirs.total_ip_count, Some(10));

    // Berth's reading: every record whole (its own keys live inside the string), and
    // status.lastAllocatedIP, an optional field of Berth's CRD.
    let read = api.get(&name).await.unwrap();
    let mut as_json = serde_json::to_value(&read).unwrap();
    as_json["metadata"] = json!({"name": name});
    let ours: SpiderIPPool = serde_json::from_value(as_json).unwrap();
    assert_eq!(ours.records(), pool.records());
    assert_eq!(
        ours.status.unwrap().last_allocated_ip,
        Some("10.7.168.172".parse().unwrap())
    );
}

#[tokio::test]
async fn an_endpoint_keeps_the_status_written_with_it_and_has_no_status_subresource() {
    let cluster = cluster().await;
    let ns = cluster.namespace("se").await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().unwrap(),
        ns.name(),
        &v2beta1::SpiderEndpoint::api_resource(),
    );
    let pp = PostParams::default();
    let status = json!({
        "current": {
            "uid": "u-0",
            "node": "node1",
            "ips": [{
                "interface": "eth0",
                "ipv4": "10.6.168.172/16",
                "ipv4Pool": "auto4-test-app-eth0-b1a36",
                "vlan": 0,
                "ipv4Gateway": "10.6.0.1",
                "cleanGateway": false,
                "routes": [{"dst": "10.96.0.0/12", "gw": "10.6.168.123"}],
            }],
        },
        "ownerControllerType": "StatefulSet",
        "ownerControllerName": "web",
    });
    let endpoint = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderEndpoint",
        "metadata": {"name": "web-0"},
        "status": status,
    });
    let created = api.create(&pp, &object(endpoint)).await.unwrap();
    assert_eq!(created.data["status"], status);

    // A plain update writes the status, as Spiderpool's agent does; a NIC written without a
    // vlan gets the CRD's default, 0.
    let mut updated = created.clone();
    updated.data["status"]["current"]["ips"]
        .as_array_mut()
        .unwrap()
        .push(json!({"interface": "net1", "ipv4": "10.7.168.173/16", "ipv4Pool": "p7"}));
    let replaced = api.replace("web-0", &pp, &updated).await.unwrap();
    let nics = replaced.data["status"]["current"]["ips"]
        .as_array()
        .unwrap();
    assert_eq!(nics.len(), 2);
    assert_eq!(nics[1]["vlan"], 0);
    let typed: Api<v2beta1::SpiderEndpoint> = Api::namespaced(cluster.client().unwrap(), ns.name());
    let typed = typed.get("web-0").await.unwrap();
    assert_eq!(
        typed.status.unwrap().current.ips[1].ipv4_pool.as_deref(),
        Some("p7")
    );

    // kubectl shows the first NIC's columns.
    let listed = kubectl(cluster, &["get", "se", "-n", ns.name()], None);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "INTERFACE",
            "IPV4POOL",
            "IPV4",
            "IPV6POOL",
            "IPV6",
            "NODE"
        ]
    );

    // No /status to write to, and the schema's required fields hold.
    assert_eq!(refused(api.get_status("web-0").await), 404);
    let incomplete = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderEndpoint",
        "metadata": {"name": "web-1"},
        "status": {"current": {"uid": "u-1", "node": "node1", "ips": []}},
    });
    assert_eq!(refused(api.create(&pp, &object(incomplete)).await), 422);
}

#[tokio::test]
async fn the_schemas_refuse_what_spiderpools_refuse() {
    let cluster = cluster().await;
    let pp = PostParams::default();
    let pools = pools(cluster);
    let bad_version = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": unique_name("v5")},
        "spec": {"ipVersion": 5, "subnet": "10.6.0.0/16"},
    });
    assert_eq!(refused(pools.create(&pp, &object(bad_version)).await), 422);
    let no_subnet = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": unique_name("no-subnet")},
        "spec": {"ips": ["10.6.168.171"]},
    });
    assert_eq!(refused(pools.create(&pp, &object(no_subnet)).await), 422);

    let reserved: Api<v2beta1::SpiderReservedIP> = Api::all(cluster.client().unwrap());
    let name = unique_name("reserved");
    let spec = v2beta1::ReservedIpSpec {
        ip_version: Some(4),
        ips: vec!["10.6.168.180".into()],
    };
    reserved
        .create(&pp, &v2beta1::SpiderReservedIP::new(&name, spec.clone()))
        .await
        .unwrap();
    assert_eq!(reserved.get(&name).await.unwrap().spec, spec);
}
