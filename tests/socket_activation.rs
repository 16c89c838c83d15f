//! `berth agent` under systemd socket activation, driven by `systemd-socket-activate` as
//! `deploy/systemd/berth.socket` drives it: the socket listens before any agent runs, the first
//! connection starts the agent on the passed socket, later requests go to the same process,
//! and a stop leaves the socket's file to the service manager.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cni_plugin::agent::AgentClient;
use cni_plugin::agent::protocol::AddArgs;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// The activator (which execs the agent on the first connection); killed when dropped.
struct Activated(Child);

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn berth(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BERTH)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run berth");
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn add(i: usize) -> AddArgs {
    AddArgs {
        container_id: format!("c{i}"),
        if_name: "eth0".into(),
        pod_name: format!("p{i}"),
        pod_uid: format!("u{i}"),
        default_ipv4_ippool: vec!["pool-a".into()],
        ..AddArgs::default()
    }
}

#[test]
fn the_first_connection_starts_the_agent_on_the_passed_socket() {
    assert!(
        Path::new(ACTIVATE).exists(),
        "this test needs {ACTIVATE}: apt-get install systemd (scripts/test installs it as root)"
    );
    let temp = tempfile::Builder::new()
        .prefix("berth-activation-")
        .tempdir()
        .unwrap();
    let data = temp.path().join("data");
    let socket = temp.path().join("agent.sock");
    let pool = temp.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
         metadata: {name: pool-a}\nspec: {subnet: 10.6.0.0/16, ips: [10.6.168.171-10.6.168.180]}\n",
    )
    .unwrap();
    berth(&data, &["apply", "-f", pool.to_str().unwrap()]);

    let mut activator = Activated(
        Command::new(ACTIVATE)
            .arg("-l")
            .arg(&socket)
            .arg(BERTH)
            .arg("--data-dir")
            .arg(&data)
            // Not the activated socket's path: the agent must serve what it is passed.
            .args(["agent", "--socket", "/nonexistent/berth-agent.sock"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start systemd-socket-activate"),
    );
    // systemd-socket-activate says so on stderr once it listens.
    let mut stderr = BufReader::new(activator.0.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(said.contains("Listening on"), "activator said {said:?}");
    std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut String::new());
    });
    let record = data.join(cni_plugin::agent::record::AGENT_RECORD);
    assert!(
        !record.exists(),
        "no agent runs before the first connection"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = AgentClient::new(&socket).with_timeout(Duration::from_secs(30));
    // The first request starts the agent, which opens the store and answers it.
    let first = rt.block_on(client.add(&add(0))).expect("first ADD");
    assert_eq!(first.ips[0].address.to_string(), "10.6.168.171/16");
    let mut stdout = BufReader::new(activator.0.stdout.take().unwrap());
    let mut serving = String::new();
    stdout.read_line(&mut serving).unwrap();
    assert_eq!(
        serving.trim(),
        format!(
            "berth agent: serving {} on {} (socket activated)",
            data.display(),
            socket.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().trim(),
        socket.display().to_string(),
        "the agent records the socket it was passed"
    );

    // Later requests, and berth commands (through the record), go to the same agent.
    for i in 1..5 {
        rt.block_on(client.add(&add(i))).expect("ADD");
    }
    let pools = berth(&data, &["get", "sp"]);
    assert!(pools.contains("pool-a"), "{pools}");
    assert!(
        activator.0.try_wait().unwrap().is_none(),
        "the agent runs on"
    );

    // SIGTERM: the agent stops cleanly and leaves the socket to the service manager.
    let pid = activator.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = activator.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "agent exit: {status}");
    assert!(
        socket.exists(),
        "the activated socket's file is not the agent's to remove"
    );
    assert!(!record.exists(), "a clean stop removes the record");
    // The store holds the five allocations the agent acknowledged.
    let held = berth(&data, &["get", "sp", "pool-a", "-o", "json"]);
    assert_eq!(held.matches("\\\"containerID\\\"").count(), 5, "{held}");
}
