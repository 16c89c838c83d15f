//! What the command line's cluster tests (`kube_get`, `webhook`) share: kubectl, the CRDs
//! installed the way a user installs them, and a one-NIC allocation request.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::process::Stdio;

use berth::core::engine::AllocateRequest;
use berth::{NicRequest, PodContext};
use kube_testbed::{Cluster, SharedCluster};

/// Runs kubectl on `cluster` and returns its standard output; panics if it fails.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl().args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `shared`, started, with `deploy/crds/` applied by kubectl (once per test binary) and
/// established.
pub async fn with_crds(shared: &'static SharedCluster) -> &'static Cluster {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = shared.get().await;
    INSTALLED
        .get_or_init(|| async {
            let crds = format!("{}/deploy/crds", env!("CARGO_MANIFEST_DIR"));
            kubectl(cluster, &["apply", "-f", &crds]);
            kubectl(
                cluster,
                &[
                    "wait",
                    "--for=condition=established",
                    "--timeout=60s",
                    "crd",
                    "--all",
                ],
            );
        })
        .await;
    cluster
}

/// An ADD of one NIC, `eth0`, from `pool`, for the pod `default/<pod>` (uid `uid-<pod>`,
/// container `c-<pod>`).
pub fn one_nic(pool: &str, pod: &str) -> AllocateRequest {
    AllocateRequest {
        pod: PodContext {
            namespace: "default".into(),
            name: pod.into(),
            ..Default::default()
        },
        pod_uid: format!("uid-{pod}"),
        container_id: format!("c-{pod}"),
        nics: vec![NicRequest {
            interface: "eth0".into(),
            default_ipv4_pools: vec![pool.into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `kubectl apply` of a YAML text; panics if it fails.
pub fn apply_yaml(cluster: &Cluster, yaml: &str) -> String {
    kubectl_apply(cluster, yaml, &[]).unwrap_or_else(|e| panic!("kubectl apply: {e}"))
}

/// `kubectl apply -f -` of `yaml`: Ok(stdout) or Err(stderr).
pub fn kubectl_apply(cluster: &Cluster, yaml: &str, extra: &[&str]) -> Result<String, String> {
    let mut child = cluster
        .kubectl()
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    if out.status.success() {
        Ok(text(out.stdout))
    } else {
        Err(text(out.stderr))
    }
}

/// A Deployment `name` in `namespace` with `replicas`, whose pods take one IPv4 address on
/// `eth0` from an auto pool of `subnet` sized `+1` (the seed's annotations, one NIC).
pub fn deployment(namespace: &str, name: &str, subnet: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations:
        ipam.spidernet.io/subnets: '[{{"interface":"eth0","ipv4":["{subnet}"]}}]'
        ipam.spidernet.io/ippool-ip-number: "+1"
    spec:
      containers: [{{name: c, image: nginx}}]
"#
    )
}

/// Starts the `berth` binary with `args` (no KUBECONFIG from the environment); its stdout
/// lines arrive on the receiver, its stderr is discarded.
pub fn spawn_berth(
    args: &[&std::ffi::OsStr],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    spawn_berth_with(args, &[])
}

/// [`spawn_berth`] with these environment variables set.
pub fn spawn_berth_with(
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAME")
        .envs(envs.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start berth");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// A plain HTTP/1.0 GET of `path` from `addr`: the whole answer, status line first.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the metrics address");
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

/// `127.0.0.1:PORT` with a port free a moment ago, for a server started next.
pub fn free_local_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The value of the unlabelled metric `name` on a `/metrics` page.
pub fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} on the page:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// Builds example `name` as `cargo build --example NAME` does; its executable.
pub fn example(name: &str) -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["build", "--example", name, "--message-format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build --example {name} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo names the example's executable")
}
