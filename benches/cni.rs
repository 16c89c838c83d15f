//! Whole-process CNI benchmark: `berth-ipam` (agent mode and embedded mode) against Debian's
//! `host-local`, each invoked as a container runtime invokes an IPAM plugin — one process per
//! ADD or DEL, config on stdin, `CNI_*` and `K8S_POD_*` in the environment.
//!
//! Each scenario (an empty store, then a store already holding 5,000 allocations) is measured
//! in two ways, with distinct containers, and prints p50 and p99 of one invocation per
//! contender and their ratios to host-local's. Nothing is asserted.
//!
//! - **Back to back**, the headline: as a runtime starting many pods calls one plugin, each
//!   contender makes its ADDs in a row, then its DELs in a row, with nothing in between. The
//!   contenders take turns in two passes, the second in reverse order, half of the containers
//!   each, so that drift in the machine's state does not favour the first.
//! - **Interleaved**: the contenders rotate invocation by invocation, so each one is idle while
//!   the others run (an agent gets a pause between its calls).
//!
//! ```text
//! cargo build --release -p cni-plugin -p berth
//! scripts/build-plugins                               # optional: the static plugin too
//! cargo bench -p berth-benches --bench cni            # N = 200; BERTH_BENCH_N=500 for more
//! ```
//!
//! `BERTH_BENCH_MODE=back-to-back` or `interleaved` runs one mode only. `BERTH_BENCH_BUSY=K`
//! keeps K threads spinning at the lowest priority for the whole run: a node busy with other
//! work, as nodes are when many pods start.
//!
//! When `scripts/build-plugins` has built the static `berth-ipam`, it runs beside the ordinary
//! one in agent mode. A last row, `/bin/true` fed the same way, is the floor: what starting any
//! process costs here, which no plugin can go below.
//!
//! host-local keeps one file per IP and, on every ADD and DEL, reads every file of its data dir
//! to look for the container (`GetByID`); Berth looks up one pool. Embedded mode also opens the
//! sled store in every process (a few milliseconds); agent mode sends one HTTP request to the
//! `berth agent` that holds it open.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipam_core::engine::{AllocateRequest, AnyObject, Engine};
use ipam_core::{NicRequest, PodContext};
use ipam_core::{SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
/// Allocations already in the store in the second scenario (50 in the `cargo test` smoke run).
const PRELOAD: u32 = 5_000;
const PRELOAD_SMOKE: u32 = 50;

/// The directory holding the workspace's release binaries (this bench runs from
/// `<target>/release/deps/`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release")
        .to_path_buf()
}

struct Contender {
    name: &'static str,
    binary: PathBuf,
    config: String,
}

impl Contender {
    fn invoke(&self, command: &str, container: &str, netns: &Path) -> Duration {
        let started = Instant::now();
        let mut child: Child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container};\
                     K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{container}"
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot run {}: {e}", self.name, self.binary.display()));
        match child
            .stdin
            .take()
            .expect("stdin")
            .write_all(self.config.as_bytes())
        {
            // The floor's /bin/true reads nothing; a plugin that exits early fails below.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
        let out = child.wait_with_output().expect("wait");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{} {command} {container} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

/// p50 and p99 of `v` (nearest rank).
fn percentiles(v: &[Duration]) -> (Duration, Duration) {
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99))
}

/// How the contenders' calls are ordered.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Each contender's calls in a row.
    BackToBack,
    /// The contenders in turn, call by call.
    Interleaved,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::BackToBack => "back to back",
            Mode::Interleaved => "interleaved",
        }
    }

    /// Runs `n` ADDs and their DELs per contender, containers `<prefix><i>`; returns the
    /// ADD and DEL times per contender.
    fn run(
        self,
        contenders: &[Contender],
        n: usize,
        prefix: &str,
        netns: &Path,
    ) -> Vec<(Vec<Duration>, Vec<Duration>)> {
        let mut times = vec![(Vec::new(), Vec::new()); contenders.len()];
        let id = |i: usize| format!("{prefix}{i}");
        match self {
            Mode::Interleaved => {
                for i in 0..n {
                    for (k, c) in contenders.iter().enumerate() {
                        times[k].0.push(c.invoke("ADD", &id(i), netns));
                    }
                }
                for i in 0..n {
                    for (k, c) in contenders.iter().enumerate() {
                        times[k].1.push(c.invoke("DEL", &id(i), netns));
                    }
                }
            }
            Mode::BackToBack => {
                let half = n / 2;
                let order: Vec<usize> = (0..contenders.len()).collect();
                let passes = [
                    (order.clone(), 0..half),
                    (order.into_iter().rev().collect::<Vec<_>>(), half..n),
                ];
                for (order, range) in passes {
                    for k in order {
                        let c = &contenders[k];
                        for i in range.clone() {
                            times[k].0.push(c.invoke("ADD", &id(i), netns));
                        }
                        for i in range.clone() {
                            times[k].1.push(c.invoke("DEL", &id(i), netns));
                        }
                    }
                }
            }
        }
        times
    }
}

/// `k` processes spinning at the lowest priority until dropped: other work on the node, which
/// takes what CPU the plugins leave, as a build beside them would.
struct Busy(Vec<Child>);

impl Busy {
    fn start(k: usize) -> Busy {
        Busy(
            (0..k)
                .map(|_| {
                    Command::new("nice")
                        .args(["-n", "19", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("start a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A data dir with one pool covering a /16 and `preload` allocations in it.
fn berth_data_dir(dir: &Path, preload: u32, rt: &tokio::runtime::Runtime, netns: &Path) {
    rt.block_on(async {
        let store = SledStore::open(dir, OpenOptions::default()).expect("open sled");
        let engine = Engine::new(store);
        let pool = SpiderIPPool::new(
            "bench",
            "10.201.0.0/16".parse().unwrap(),
            ips!["10.201.0.0/16"],
        );
        engine
            .apply(AnyObject::Pool(pool))
            .await
            .expect("apply pool");
        if preload > 0 {
            let requests: Vec<AllocateRequest> = (0..preload)
                .map(|i| AllocateRequest {
                    pod: PodContext {
                        namespace: "default".into(),
                        name: format!("preload-{i}"),
                        ..Default::default()
                    },
                    pod_uid: format!("preload-{i}"),
                    container_id: format!("preload{i}"),
                    netns: Some(netns.display().to_string()),
                    nics: vec![NicRequest {
                        interface: "eth0".into(),
                        network: Some("bench".into()),
                        default_ipv4_pools: vec!["bench".into()],
                        ..Default::default()
                    }],
                })
                .collect();
            // Many at once: the engine merges them into few pool writes.
            for chunk in requests.chunks(250) {
                let all = chunk.iter().map(|r| engine.allocate(r));
                for r in futures::future::join_all(all).await {
                    r.expect("preload allocation");
                }
            }
        }
    });
}

/// host-local's data dir with `preload` allocations in its own format (one file per IP holding
/// `<container id>\r\n<ifname>`, and the last reserved IP).
fn host_local_preload(dir: &Path, network: &str, preload: u32) {
    let d = dir.join(network);
    std::fs::create_dir_all(&d).unwrap();
    let mut last = String::new();
    for i in 0..preload {
        let n = i + 2; // 10.200.0.2 onwards (.1 is the gateway)
        let ip = format!("10.200.{}.{}", n / 256, n % 256);
        std::fs::write(d.join(&ip), format!("preload{i}\r\neth0")).unwrap();
        last = ip;
    }
    std::fs::write(d.join("last_reserved_ip.0"), last).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run of 3.
    let testing = !std::env::args().any(|a| a == "--bench");
    let release = release_dir();
    let ipam = release.join("berth-ipam");
    let berth = release.join("berth");
    if !ipam.exists() || !berth.exists() || !Path::new(HOST_LOCAL).exists() {
        eprintln!(
            "cni bench skipped: needs {}, {} (cargo build --release -p cni-plugin -p berth) and {HOST_LOCAL} \
             (apt-get install containernetworking-plugins)",
            ipam.display(),
            berth.display()
        );
        return;
    }
    // The static plugin of scripts/build-plugins, measured beside the ordinary one when built.
    let static_ipam = release
        .parent()
        .map(|t| {
            t.join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
                .join("release/berth-ipam")
        })
        .filter(|p| p.exists());
    let n: usize = if testing {
        3
    } else {
        std::env::var("BERTH_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    };
    let modes: Vec<Mode> = match std::env::var("BERTH_BENCH_MODE").as_deref() {
        Ok("back-to-back") => vec![Mode::BackToBack],
        Ok("interleaved") => vec![Mode::Interleaved],
        Ok("both") | Err(_) => vec![Mode::BackToBack, Mode::Interleaved],
        Ok(other) => panic!("BERTH_BENCH_MODE={other}: say back-to-back, interleaved or both"),
    };
    let busy: usize = std::env::var("BERTH_BENCH_BUSY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _busy = Busy::start(busy);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let temp = tempfile::Builder::new()
        .prefix("berth-cni-bench-")
        .tempdir()
        .unwrap();
    // Any existing path will do as CNI_NETNS: no plugin here enters it.
    let netns = temp.path().join("netns");
    std::fs::write(&netns, "").unwrap();

    println!(
        "whole-process CNI ADD/DEL, {n} containers per scenario and mode, one process per call; \
         p50 and p99 per call, ratios to host-local's{}",
        if busy > 0 {
            format!("; {busy} busy loops at nice 19 beside")
        } else {
            String::new()
        }
    );
    let full = if testing { PRELOAD_SMOKE } else { PRELOAD };
    for (scenario, preload) in [
        ("empty store".to_string(), 0),
        (format!("{full} allocations"), full),
    ] {
        let dir = temp.path().join(if preload > 0 { "full" } else { "empty" });
        let embedded_dir = dir.join("embedded");
        let agent_dir = dir.join("agent");
        let host_local_dir = dir.join("host-local");
        berth_data_dir(&embedded_dir, preload, &rt, &netns);
        berth_data_dir(&agent_dir, preload, &rt, &netns);
        if preload > 0 {
            host_local_preload(&host_local_dir, "bench", preload);
        }
        let socket = dir.join("agent.sock");
        let mut agent = Command::new(&berth)
            .arg("--data-dir")
            .arg(&agent_dir)
            .args(["agent", "--socket"])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start berth agent");
        // The agent says so once its socket listens.
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(agent.stdout.take().expect("piped")),
            &mut said,
        )
        .expect("read the agent's first line");
        assert!(
            said.starts_with("berth agent: serving "),
            "berth agent did not start: {said:?}"
        );
        let log = dir.join("berth-ipam.log");
        let mut contenders = vec![
            Contender {
                name: "host-local",
                binary: HOST_LOCAL.into(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.200.0.0/16","gateway":"10.200.0.1"}}]]}}}}"#,
                    host_local_dir.display()
                ),
            },
            Contender {
                name: "berth-ipam (agent)",
                binary: ipam.clone(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"berth-ipam","ipam_unix_socket_path":"{}","default_ipv4_ippool":["bench"],"log_file_path":"{}","log_level":"warn"}}}}"#,
                    socket.display(),
                    log.display()
                ),
            },
            Contender {
                name: "berth-ipam (embedded)",
                binary: ipam.clone(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"berth-ipam","data_dir":"{}","default_ipv4_ippool":["bench"],"log_file_path":"{}","log_level":"warn"}}}}"#,
                    embedded_dir.display(),
                    log.display()
                ),
            },
        ];
        if let Some(static_ipam) = &static_ipam {
            let config = contenders[1].config.clone();
            contenders.insert(
                2,
                Contender {
                    name: "berth-ipam static (agent)",
                    binary: static_ipam.clone(),
                    config,
                },
            );
        }
        contenders.push(Contender {
            name: "floor: /bin/true",
            binary: "/bin/true".into(),
            config: String::new(),
        });
        for mode in &modes {
            let prefix = match mode {
                Mode::BackToBack => "b2b",
                Mode::Interleaved => "rot",
            };
            let times = mode.run(&contenders, n, prefix, &netns);
            report(&format!("{scenario}, {}", mode.name()), &contenders, &times);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(agent.id().to_string())
            .status();
        let _ = agent.wait();
    }
}

/// Prints one table: p50 and p99 of ADD and DEL per contender, and their ratios to the first
/// contender's (host-local).
fn report(title: &str, contenders: &[Contender], times: &[(Vec<Duration>, Vec<Duration>)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("\n{title}");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}   {:>17} {:>17}",
        "contender",
        "ADD p50",
        "ADD p99",
        "DEL p50",
        "DEL p99",
        "ADD ratio p50/p99",
        "DEL ratio p50/p99"
    );
    let base_add = percentiles(&times[0].0);
    let base_del = percentiles(&times[0].1);
    for (c, (add, del)) in contenders.iter().zip(times) {
        let (a50, a99) = percentiles(add);
        let (d50, d99) = percentiles(del);
        println!(
            "{:<28} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms   {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            c.name,
            ms(a50),
            ms(a99),
            ms(d50),
            ms(d99),
            ms(a50) / ms(base_add.0),
            ms(a99) / ms(base_add.1),
            ms(d50) / ms(base_del.0),
            ms(d99) / ms(base_del.1),
        );
    }
}
