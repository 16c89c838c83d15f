//! A cluster leaves nothing behind: not when the test binary that holds it in a `static` exits,
//! not when that binary is killed with SIGKILL, and not after `scripts/kube-testbed down`.
//!
//! The first two run this test binary again as a child, in a helper mode that starts a shared
//! cluster and reports its directory and processes; the parent then ends the child and watches.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_testbed::{Options, SharedCluster, binaries};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

const HELPER: &str = "KUBE_TESTBED_CLEANUP_HELPER";

/// Run only as the child of the tests below (`KUBE_TESTBED_CLEANUP_HELPER=hold|exit`): starts
/// the shared cluster, prints `DIR <path>` and `PID <name> <pid>` lines and `READY`, then holds
/// the cluster until killed, or returns so that the process exits.
#[tokio::test]
#[ignore = "a helper that the cleanup tests run in a child process"]
async fn helper_holds_a_shared_cluster() {
    let Ok(mode) = std::env::var(HELPER) else {
        return;
    };
    let cluster = CLUSTER.get().await;
    let mut out = std::io::stdout();
    writeln!(out, "DIR {}", cluster.dir().display()).unwrap();
    for (name, pid) in cluster.pids() {
        writeln!(out, "PID {name} {pid}").unwrap();
    }
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    if mode == "hold" {
        std::future::pending::<()>().await;
    }
}

struct Report {
    dir: PathBuf,
    pids: Vec<(String, u32)>,
}

fn start_helper(mode: &str) -> (Child, Report) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_a_shared_cluster",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dir = None;
    let mut pids = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("DIR ") {
            dir = Some(PathBuf::from(path));
        } else if let Some(rest) = line.strip_prefix("PID ") {
            let (name, pid) = rest.split_once(' ').unwrap();
            pids.push((name.to_owned(), pid.parse().unwrap()));
        } else if line == "READY" {
            break;
        }
    }
    // Keep reading (and dropping) the child's output so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let dir = dir.expect("the helper reports its cluster's directory");
    assert!(dir.is_dir());
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]
    );
    (child, Report { dir, pids })
}

/// Whether `pid` runs: it exists and is not a zombie (a dead process its new parent, init, has
/// yet to reap).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

fn assert_nothing_left(report: &Report) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<&(String, u32)> = report
            .pids
            .iter()
            .filter(|(_, pid)| running(*pid))
            .collect();
        let dir_left = report.dir.exists();
        if left.is_empty() && !dir_left {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the test process ended: still running {left:?}, directory left: {dir_left}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_test_binary_killed_with_sigkill_leaves_no_process_and_no_directory() {
    let (mut child, report) = start_helper("hold");
    assert!(report.pids.iter().all(|(_, pid)| running(*pid)));
    child.kill().unwrap(); // SIGKILL: no destructor, no handler runs in the child
    child.wait().unwrap();
    assert_nothing_left(&report);
}

#[test]
fn a_test_binary_that_exits_leaves_no_process_and_no_directory() {
    let (mut child, report) = start_helper("exit");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_nothing_left(&report);
}

fn script(args: &[&str]) -> Command {
    let mut command = Command::new(binaries::repository().join("scripts/kube-testbed"));
    command.args(args);
    command
}

#[test]
fn kube_testbed_up_prints_a_kubeconfig_whose_nodes_are_ready_and_down_ends_it() {
    let mut up = script(&["up", "--nodes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let kubeconfig = lines.next().unwrap().unwrap();
    let kubectl = lines.next().unwrap().unwrap();
    let kubeconfig = PathBuf::from(
        kubeconfig
            .strip_prefix("KUBECONFIG=")
            .expect("KUBECONFIG= first"),
    );
    let kubectl = PathBuf::from(kubectl.strip_prefix("KUBECTL=").expect("KUBECTL= second"));
    assert!(kubeconfig.is_absolute() && kubectl.is_absolute());

    let nodes = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "--no-headers"])
        .output()
        .unwrap();
    let _ = script(&["down"]).status();
    let listing = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let ready: Vec<&str> = listing
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .collect();
    assert_eq!(ready.len(), 2, "{listing}");

    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    let dir: &Path = kubeconfig.parent().unwrap().parent().unwrap();
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
