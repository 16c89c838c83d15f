//! `berth webhook` against a real API server (crates/kube-testbed): objects written with
//! `kubectl` are completed and refused exactly as `berth apply` completes and refuses them, the
//! webhook's TLS renews itself while serving, and allocations (status writes) never go through
//! it.
//!
//! Each test starts its own `berth webhook` process, registered under a configuration name of
//! its own, and removes the registration when it ends. The tests run one at a time: while one
//! test's webhook is down, `failurePolicy: Fail` refuses every Spider* write of the cluster.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth::core::engine::{AnyObject, Engine};
use berth::core::store::{Store, TypedStore};
use berth::k8s::KubeStore;
use berth::sled::{OpenOptions, SledStore};
use berth::{SpiderIPPool, SpiderSubnet};
use kube_testbed::{Cluster, Options, SharedCluster};
use support::{kubectl, kubectl_apply};

mod support;
use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

/// One test at a time (see the module documentation).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> &'static Cluster {
    support::with_crds(&CLUSTER).await
}

/// A running `berth webhook`, killed and unregistered when dropped.
struct Webhook<'a> {
    cluster: &'a Cluster,
    child: Child,
    configuration: String,
    /// Its stderr (the log), read in the background.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl<'a> Webhook<'a> {
    /// Starts `berth webhook` on 127.0.0.1, with its Secret in `namespace`, and waits for it to
    /// say the API server calls it.
    fn start(cluster: &'a Cluster, namespace: &str, name: &str, extra: &[&str]) -> Self {
        Self::start_as(cluster, &["webhook"], namespace, name, extra)
    }

    /// [`Webhook::start`] of another command that serves the webhook (`command`, its own
    /// flags first).
    fn start_as(
        cluster: &'a Cluster,
        command: &[&str],
        namespace: &str,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(BERTH)
            .env_remove("KUBECONFIG")
            .args(command)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--listen", "127.0.0.1:0"])
            .args(["--secret", &format!("{namespace}/{name}-tls")])
            .args(["--configuration", name])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start berth webhook");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut webhook = Webhook {
            cluster,
            child,
            configuration: name.to_string(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("berth webhook: ready") => break,
                Ok(_) => {}
                Err(_) => {
                    let status = webhook.child.try_wait().unwrap();
                    panic!(
                        "berth webhook did not get ready ({status:?}); its log:\n{}",
                        webhook.log()
                    );
                }
            }
        }
        webhook
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Webhook<'_> {
    fn drop(&mut self) {
        self.kill();
        let _ = self
            .cluster
            .kubectl()
            .args([
                "delete",
                "--ignore-not-found",
                &format!("mutatingwebhookconfiguration/{}", self.configuration),
                &format!("validatingwebhookconfiguration/{}", self.configuration),
            ])
            .output();
    }
}

/// An engine on the cluster, as a node's would be.
async fn cluster_engine(cluster: &Cluster) -> Engine<KubeStore> {
    Engine::new(KubeStore::new(cluster.client().unwrap()).await.unwrap())
}

/// `kubectl get KIND NAME -o json`.
fn get_json(cluster: &Cluster, kind: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl(cluster, &["get", kind, name, "-o", "json"])).unwrap()
}

/// What of an object the webhook decides: its spec, labels, finalizers and owners.
fn decided(v: &Value) -> Value {
    serde_json::json!({
        "spec": v["spec"],
        "labels": v["metadata"]["labels"],
        "finalizers": v["metadata"]["finalizers"],
        "ownerReferences": v["metadata"]["ownerReferences"],
    })
}

/// Fills in what the API server fills in before any webhook sees an object: the defaults of
/// the CRD's schema for the spec's fields (SpiderIPPool's `default` and `disable`).
fn crd_defaults(kind: berth::core::Kind, object: &mut Value) {
    let crd = berth::k8s::crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind.name())
        .expect("a CRD per kind");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    let fields = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for (field, schema) in fields.as_object().into_iter().flatten() {
        if let Some(default) = schema.get("default") {
            object["spec"]
                .as_object_mut()
                .unwrap()
                .entry(field.clone())
                .or_insert_with(|| default.clone());
        }
    }
}

fn seed(file: &str) -> String {
    let path = format!("{}/examples/seed/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_yaml_is_stored_as_berth_apply_stores_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let ns = cluster.namespace("webhook-seed").await.unwrap();
    let _webhook = Webhook::start(cluster, ns.name(), "berth-webhook-seed", &[]);

    // The seed's subnets (10.6.0.1/16 and vlan: 0 as written), then its manual pool.
    let subnets = seed("subnets.yaml");
    let pool_yaml = seed("manual-pool.yaml");
    let pool_doc = pool_yaml
        .split("\n---\n")
        .next()
        .expect("the pool comes first");
    kubectl_apply(cluster, &subnets, &[]).expect("the seed's subnets are admitted");
    kubectl_apply(cluster, pool_doc, &[]).expect("the seed's pool is admitted");

    // The same documents through `berth apply` on the embedded store.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for text in [&subnets, &pool_doc.to_string()] {
        let file = dir.path().join("doc.yaml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BERTH)
            .args(["--data-dir", data.to_str().unwrap(), "apply", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "berth apply: {out:?}");
    }
    let embedded = SledStore::open(&data, OpenOptions::new()).unwrap();
    for (kind, name) in [
        ("spidersubnet", "subnet-test-ens192"),
        ("spidersubnet", "subnet-test-ens224"),
        ("spiderippool", "firewall-pool"),
    ] {
        let stored = get_json(cluster, kind, name);
        let k = berth::table::kind_named(kind).unwrap();
        let local = embedded
            .get(&berth::core::ObjectKey::cluster(k, name))
            .await;
        let mut local = local.unwrap().expect("berth apply stored it");
        crd_defaults(k, &mut local);
        assert_eq!(
            decided(&stored),
            decided(&local),
            "{kind} {name}: kubectl through the webhook, then berth apply"
        );
    }
    // The pool was bound to its subnet, whose gateway it inherits; the deprecated vlan is gone.
    let pool = get_json(cluster, "sp", "firewall-pool");
    assert_eq!(pool["spec"]["subnet"], "10.6.0.0/16");
    assert_eq!(pool["spec"]["gateway"], "10.6.0.1");
    assert_eq!(
        pool["metadata"]["labels"]["ipam.spidernet.io/owner-spider-subnet"],
        "subnet-test-ens192"
    );
    let subnet = get_json(cluster, "ss", "subnet-test-ens192");
    assert!(subnet["spec"].get("vlan").is_none(), "{subnet}");

    // `kubectl get ss` and `kubectl get sp` print the seed's columns.
    let table = kubectl(cluster, &["get", "ss"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT"
        ]
    );
    assert_eq!(lines[1][..3], ["subnet-test-ens192", "4", "10.6.0.1/16"]);
    let table = kubectl(cluster, &["get", "sp", "firewall-pool"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT",
            "DEFAULT",
            "DISABLE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["firewall-pool", "4", "10.6.0.0/16"]);
}

/// The message `berth apply` gives for `object` applied on `engine`.
async fn berth_refusal<S: Store>(engine: &Engine<S>, object: impl Into<AnyObject>) -> String {
    engine
        .apply(object)
        .await
        .expect_err("berth apply refuses it")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_berth_apply_refuses_the_api_server_refuses_with_the_same_message() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let ns = cluster.namespace("webhook-refusals").await.unwrap();
    let webhook = Webhook::start(cluster, ns.name(), "berth-webhook-refusals", &[]);
    let engine = cluster_engine(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let local = Engine::new(SledStore::open(dir.path().join("data"), OpenOptions::new()).unwrap());

    let subnet = r#"
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderSubnet
metadata: {name: refusals-subnet}
spec: {subnet: 10.20.0.0/16, ips: ["10.20.1.1-10.20.1.100"], gateway: 10.20.0.1}
"#;
    let pool = |name: &str, ips: &str, extra: &str| {
        format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
             metadata: {{name: {name}}}\nspec: {{subnet: 10.20.0.0/16, ips: [\"{ips}\"]{extra}}}\n"
        )
    };
    let objects = |yaml: &str| berth::manifest::parse("test", yaml).unwrap();
    kubectl_apply(cluster, subnet, &[]).unwrap();
    let a = pool("refusals-a", "10.20.1.1-10.20.1.10", "");
    kubectl_apply(cluster, &a, &[]).unwrap();
    for o in objects(subnet).into_iter().chain(objects(&a)) {
        local.apply(o).await.unwrap();
    }

    let cases = [
        (
            "a pool overlapping another",
            pool("refusals-b", "10.20.1.5-10.20.1.20", ""),
        ),
        (
            "a gateway outside the subnet",
            pool("refusals-c", "10.20.1.30", ", gateway: 10.99.0.1"),
        ),
        (
            "an empty podAffinity",
            pool("refusals-d", "10.20.1.40", ", podAffinity: {}"),
        ),
        (
            "an invalid label value in podAffinity",
            pool(
                "refusals-e",
                "10.20.1.41",
                ", podAffinity: {matchLabels: {app: \"not valid!\"}}",
            ),
        ),
        (
            "an owner subnet that does not exist",
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
             name: refusals-f\n  ownerReferences:\n  - {apiVersion: spiderpool.spidernet.io/v2beta1, \
             kind: SpiderSubnet, name: no-such-subnet, uid: 0e4f1a4e-0000-4000-8000-000000000000, \
             controller: true}\nspec: {subnet: 10.20.0.0/16, ips: [\"10.20.1.42\"]}\n"
                .to_string(),
        ),
        (
            "a changed (immutable) subnet CIDR",
            subnet.replace("10.20.0.0/16", "10.21.0.0/16").replace("10.20.", "10.21."),
        ),
        (
            "an update to an invalid podAffinity",
            pool("refusals-a", "10.20.1.1-10.20.1.10", ", podAffinity: {}"),
        ),
    ];
    for (what, yaml) in &cases {
        let object = objects(yaml).remove(0);
        let message = berth_refusal(&local, object).await;
        let refused =
            kubectl_apply(cluster, yaml, &[]).expect_err(&format!("the API server refuses {what}"));
        eprintln!("{what}: {}", refused.trim());
        assert!(
            refused.contains("denied the request") && refused.contains(&message),
            "{what}: kubectl said\n{refused}\nberth apply said\n{message}"
        );
    }

    // The removal of an allocated IP: one pod holds 10.20.1.1 on the cluster and locally.
    let request = support::one_nic("refusals-a", "holder-0");
    let held = engine.allocate(&request).await.unwrap();
    let held_local = local.allocate(&request).await.unwrap();
    assert_eq!(
        held.nics[0].ips[0].address,
        held_local.nics[0].ips[0].address
    );
    let ip = held.nics[0].ips[0].address.addr().to_string();
    let last = ip.rsplit('.').next().unwrap().parse::<u8>().unwrap();
    let without = pool(
        "refusals-a",
        &format!("10.20.1.{}-10.20.1.10", last + 1),
        "",
    );
    let message = berth_refusal(&local, objects(&without).remove(0)).await;
    let refused = kubectl_apply(cluster, &without, &[]).expect_err("allocated IPs stay");
    assert!(
        refused.contains("denied the request") && refused.contains(&message),
        "kubectl said\n{refused}\nberth apply said\n{message}"
    );
    // Nothing refused was stored; the pool still holds its IP.
    let pools: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
    let names: Vec<&str> = pools.iter().map(|p| p.metadata.name.as_str()).collect();
    assert!(names.contains(&"refusals-a"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("refusals-") && *n != "refusals-a")
    );
    let a: SpiderIPPool = engine
        .store()
        .get_as(None, "refusals-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.allocated_count(), 1);
    let subnet: SpiderSubnet = engine
        .store()
        .get_as(None, "refusals-subnet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subnet.spec.subnet.to_string(), "10.20.0.0/16");
    assert!(webhook.log().contains("refused"), "{}", webhook.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_do_not_wait_for_the_webhook_but_objects_do() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let ns = cluster.namespace("webhook-down").await.unwrap();
    let mut webhook = Webhook::start(cluster, ns.name(), "berth-webhook-down", &[]);
    let engine = cluster_engine(cluster).await;
    let pool = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
                metadata: {name: down-pool}\nspec: {subnet: 10.30.0.0/24, ips: [\"10.30.0.10-10.30.0.20\"]}\n";
    kubectl_apply(cluster, pool, &[]).unwrap();

    webhook.kill();
    // failurePolicy: Fail: with the webhook gone, no Spider* object gets in unchecked.
    let other = pool
        .replace("down-pool", "down-pool-2")
        .replace("10.30.0.", "10.31.0.");
    let refused = kubectl_apply(cluster, &other, &[]).expect_err("no webhook, no object");
    assert!(refused.contains("failed calling webhook"), "{refused}");
    // ... but allocations, which write the pool's status, go on.
    let allocation = engine
        .allocate(&support::one_nic("down-pool", "busy-0"))
        .await
        .expect("allocations do not go through the webhook");
    assert_eq!(
        allocation.nics[0].ips[0].address.addr().to_string(),
        "10.30.0.10"
    );
}

/// The serving certificate in the Secret (as the API returns it, base64): it changes with
/// each renewal, which is all the test compares.
fn stored_certificate(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let secret = serde_json::from_str::<Value>(&kubectl(
        cluster,
        &["get", "secret", "-n", namespace, name, "-o", "json"],
    ))
    .unwrap();
    secret["data"]["tls.crt"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_renewed_while_serving() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let ns = cluster.namespace("webhook-renew").await.unwrap();
    let name = "berth-webhook-renew";
    let secret = format!("{name}-tls");
    let webhook = Webhook::start(
        cluster,
        ns.name(),
        name,
        &["--cert-validity", "12s", "--renew-before", "8s"],
    );
    let ca_before = serde_json::from_str::<Value>(&kubectl(
        cluster,
        &["get", "secret", "-n", ns.name(), &secret, "-o", "json"],
    ))
    .unwrap()["data"]["ca.crt"]
        .clone();

    // Over 30 s, every certificate lives 12 s and is renewed 8 s before its end.
    let probe = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderReservedIP\n\
                 metadata: {name: renew-probe}\nspec: {ips: [\"10.40.0.1\"]}\n";
    let mut seen = vec![stored_certificate(cluster, ns.name(), &secret)];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stored_certificate(cluster, ns.name(), &secret);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    assert!(
        seen.len() >= 4,
        "{} certificates in 30 s; the log:\n{}",
        seen.len(),
        webhook.log()
    );
    // Every certificate of the first 20 s has expired: the API server trusts the one served
    // now, so it was swapped in without a restart. The CA did not change.
    let dry_run = kubectl_apply(cluster, probe, &["--dry-run=server", "-o", "json"])
        .expect("the API server still calls the webhook");
    let mutated: Value = serde_json::from_str(&dry_run).unwrap();
    assert_eq!(mutated["spec"]["ipVersion"], 4, "{mutated}");
    let ca_after = serde_json::from_str::<Value>(&kubectl(
        cluster,
        &["get", "secret", "-n", ns.name(), &secret, "-o", "json"],
    ))
    .unwrap()["data"]["ca.crt"]
        .clone();
    assert_eq!(ca_before, ca_after);
    let bundle: Value = serde_json::from_str(&kubectl(
        cluster,
        &["get", "mutatingwebhookconfiguration", name, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(bundle["webhooks"][0]["clientConfig"]["caBundle"], ca_after);
    assert!(
        webhook.log().contains("serving a renewed certificate"),
        "{}",
        webhook.log()
    );

    // A restart loads the Secret rather than making a new CA.
    drop(webhook);
    let _again = Webhook::start(
        cluster,
        ns.name(),
        name,
        &["--cert-validity", "12s", "--renew-before", "8s"],
    );
    let ca_restarted = serde_json::from_str::<Value>(&kubectl(
        cluster,
        &["get", "secret", "-n", ns.name(), &secret, "-o", "json"],
    ))
    .unwrap()["data"]["ca.crt"]
        .clone();
    assert_eq!(ca_before, ca_restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_the_webhook() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let ns = cluster.namespace("webhook-controller").await.unwrap();
    let lease = format!("{}/berth-controller", ns.name());
    let webhook = Webhook::start_as(
        cluster,
        &["controller", "--lease", &lease, "--webhook"],
        ns.name(),
        "berth-webhook-controller",
        &[],
    );
    let pool = |name: &str, ips: &str| {
        format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
             metadata: {{name: {name}}}\nspec: {{subnet: 10.70.0.0/24, ips: [\"{ips}\"]}}\n"
        )
    };
    let admitted = kubectl_apply(cluster, &pool("controller-a", "10.70.0.10-10.70.0.20"), &[])
        .expect("a pool is admitted");
    assert!(admitted.contains("created"), "{admitted}");
    let stored = get_json(cluster, "sp", "controller-a");
    assert_eq!(
        stored["spec"]["ipVersion"], 4,
        "mutated by the controller's webhook"
    );
    let refused = kubectl_apply(cluster, &pool("controller-b", "10.70.0.15-10.70.0.30"), &[])
        .expect_err("an overlapping pool is refused");
    assert!(
        refused.contains("denied the request") && refused.contains("overlap"),
        "{refused}"
    );
    drop(webhook);
}
