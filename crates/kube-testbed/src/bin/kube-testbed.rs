//! `kube-testbed up [--nodes N]` / `kube-testbed down`: the test control plane, for a person.
//!
//! `up` starts a cluster, prints `KUBECONFIG=<path>` and `KUBECTL=<path>` on stdout once the API
//! server is ready, and keeps it running until Ctrl-C, SIGTERM or `down`. `down` ends the cluster
//! that `up` started from this checkout and waits until every process of it is gone. Run them
//! through `scripts/kube-testbed`, which builds what is missing first.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kube_testbed::{Cluster, Options, binaries};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    about = "Berth's test control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok nodes on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster; print KUBECONFIG= and KUBECTL= once it is ready; run until Ctrl-C or `down`.
    Up {
        /// Simulated nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// End the cluster `up` started, and wait until it is gone.
    Down,
}

/// Where `up` records its pid, so that `down` finds it.
fn state_file() -> PathBuf {
    binaries::repository().join("target/kube/up.pid")
}

fn running_up() -> Option<i32> {
    let text = std::fs::read_to_string(state_file()).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether `pid` runs: it exists and is not a zombie waiting for its parent.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Up { nodes } => up(nodes).await,
        Cmd::Down => down(),
    }
}

async fn up(nodes: usize) -> ExitCode {
    if let Some(pid) = running_up() {
        eprintln!(
            "kube-testbed: a cluster is already up (pid {pid}); run `scripts/kube-testbed down` first"
        );
        return ExitCode::FAILURE;
    }
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            eprintln!("kube-testbed: cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match Cluster::start(Options::default().nodes(nodes)).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("kube-testbed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state = state_file();
    if let Err(e) = std::fs::write(&state, std::process::id().to_string()) {
        eprintln!("kube-testbed: cannot write {}: {e}", state.display());
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "KUBECONFIG={}", cluster.kubeconfig().display());
    let _ = writeln!(
        out,
        "KUBECTL={}",
        cluster.bin_dir().join("kubectl").display()
    );
    let _ = out.flush();
    eprintln!(
        "kube-testbed: {} node(s) ready in {:.1} s (API server {}, directory {}); Ctrl-C or `scripts/kube-testbed down` ends it",
        cluster.nodes().len(),
        cluster.started_in().as_secs_f64(),
        cluster.apiserver_url(),
        cluster.dir().display(),
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("kube-testbed: stopping");
    cluster.stop();
    let _ = std::fs::remove_file(&state);
    ExitCode::SUCCESS
}

fn down() -> ExitCode {
    let Some(pid) = running_up() else {
        eprintln!("kube-testbed: no cluster is up");
        let _ = std::fs::remove_file(state_file());
        return ExitCode::FAILURE;
    };
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
        eprintln!("kube-testbed: cannot signal pid {pid}: {e}");
        return ExitCode::FAILURE;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        if Instant::now() > deadline {
            eprintln!("kube-testbed: pid {pid} is still running after 60 s");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("kube-testbed: the cluster is down");
    ExitCode::SUCCESS
}
