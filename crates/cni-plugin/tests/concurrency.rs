//! 64 `berth-ipam` processes at once, in embedded mode and in agent mode; then the same with
//! SIGKILL sent to random plugins and to the agent mid-flight. No IP ever has two holders,
//! every plugin that answered got a distinct address the store records, and what the killed
//! ones leaked is gone after GC once their netns paths are gone.
//!
//! The tests of this file run one at a time (a process-wide mutex): each one is 64 processes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use berth_test_support::plugin::finish;
use cni_plugin::NetnsLiveness;
use serde_json::{Value, json};
use support::*;

const N: usize = 64;
const ENTRY: &str = "agent_process_entry";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Re-executed by [`AgentProcess::start`]: runs the agent when asked to, else nothing.
#[test]
fn agent_process_entry() {
    agent_entry();
}

/// A small xorshift generator; the seed is printed so a failing run can be replayed
/// (`BERTH_TEST_SEED`).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BERTH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("BERTH_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One container: its id and fake netns.
struct Container {
    id: String,
    netns: String,
}

fn containers(s: &Scratch, n: usize) -> Vec<Container> {
    (0..n)
        .map(|i| {
            let id = format!("ctr{i:03}");
            let netns = s.fake_netns(&id).to_str().unwrap().to_owned();
            Container { id, netns }
        })
        .collect()
}

fn start_all(cs: &[Container], confs: &[Vec<u8>]) -> Vec<Child> {
    cs.iter()
        .enumerate()
        .map(|(i, c)| {
            spawn(
                &attach_env("ADD", &c.id, "eth0", &c.netns, ""),
                &confs[i % confs.len()],
            )
        })
        .collect()
}

/// The addresses the successful plugins printed, by container; the failed ones' ids.
fn outcomes(cs: &[Container], children: Vec<Child>) -> (BTreeMap<String, IpAddr>, Vec<String>) {
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    for (c, child) in cs.iter().zip(children) {
        let out = finish(child);
        if out.code == 0 {
            ok.insert(c.id.clone(), out.ip());
        } else {
            if out.code == 1 {
                // A plugin that answered must have answered a CNI error.
                out.err();
            }
            failed.push(c.id.clone());
        }
    }
    (ok, failed)
}

fn pool_conf(s: &Scratch, ipam: Value) -> Vec<u8> {
    let mut ipam = ipam;
    ipam["default_ipv4_ippool"] = json!(["pool-a"]);
    // Less chatter in the shared log: 64 processes write it.
    ipam["log_level"] = json!("INFO");
    let _ = s;
    conf("0.3.1", "net-a", ipam)
}

/// Every plugin succeeded with a distinct address, and the store holds exactly those.
fn assert_all_distinct_and_counted(s: &Scratch, ok: &BTreeMap<String, IpAddr>) {
    assert_eq!(ok.len(), N);
    let distinct: BTreeSet<IpAddr> = ok.values().copied().collect();
    assert_eq!(distinct.len(), N, "duplicate addresses: {ok:?}");
    let held = held(&s.data_dir());
    assert_eq!(held.len(), N);
    for (cid, ip) in ok {
        assert_eq!(held.get(ip), Some(cid), "{ip}");
    }
    let pool = &pools(&s.data_dir())["pool-a"];
    assert_eq!(
        pool.status.as_ref().unwrap().allocated_ip_count,
        Some(N as i64)
    );
    assert_eq!(safety(&s.data_dir()), Vec::<String>::new());
}

#[test]
fn sixty_four_plugins_at_once_in_embedded_mode() {
    let _serial = serial();
    let s = Scratch::new();
    apply(
        &s.data_dir(),
        vec![pool("pool-a", "10.66.0.10-10.66.0.109")],
    );
    let cs = containers(&s, N);
    let conf = pool_conf(&s, s.embedded_ipam());
    let started = Instant::now();
    let children = start_all(&cs, &[conf]);
    let (ok, failed) = outcomes(&cs, children);
    println!("64 embedded ADDs at once: {:?}", started.elapsed());
    assert!(failed.is_empty(), "{failed:?}; log: {}", s.log_text());
    assert_all_distinct_and_counted(&s, &ok);
}

#[test]
fn sixty_four_plugins_at_once_in_agent_mode() {
    let _serial = serial();
    let s = Scratch::new();
    apply(
        &s.data_dir(),
        vec![pool("pool-a", "10.66.0.10-10.66.0.109")],
    );
    let agent_log = s.dir.path().join("agent.log");
    let agent = AgentProcess::start(ENTRY, &s.data_dir(), &s.socket(), &agent_log);
    let cs = containers(&s, N);
    // Half name the socket, half find the agent through the data dir's record.
    let confs = [
        pool_conf(&s, s.agent_ipam()),
        pool_conf(&s, s.embedded_ipam()),
    ];
    let started = Instant::now();
    let children = start_all(&cs, &confs);
    let (ok, failed) = outcomes(&cs, children);
    println!("64 agent-mode ADDs at once: {:?}", started.elapsed());
    assert!(failed.is_empty(), "{failed:?}; log: {}", s.log_text());
    assert!(agent.terminate().success());
    assert_all_distinct_and_counted(&s, &ok);
}

/// After the chaos: the killed containers' netns are gone; no IP has two holders; GC frees
/// exactly what the dead held; the survivors keep the addresses they were told.
fn settle_after_kills(s: &Scratch, cs: &[Container], ok: &BTreeMap<String, IpAddr>) {
    let dir = s.data_dir();
    let distinct: BTreeSet<IpAddr> = ok.values().copied().collect();
    assert_eq!(distinct.len(), ok.len(), "duplicate addresses: {ok:?}");
    assert_eq!(safety(&dir), Vec::<String>::new());
    for c in cs.iter().filter(|c| !ok.contains_key(&c.id)) {
        std::fs::remove_file(&c.netns).unwrap();
    }
    let before = held(&dir);
    let leaked = before.len() - ok.len();
    let report = with_engine(&dir, async |e| e.gc(&NetnsLiveness).await.unwrap());
    println!(
        "{} survivors, {} leaked records freed by GC",
        ok.len(),
        report.released.len()
    );
    assert_eq!(report.released.len(), leaked);
    let after = held(&dir);
    let expected: BTreeMap<IpAddr, String> = ok.iter().map(|(c, ip)| (*ip, c.clone())).collect();
    assert_eq!(after, expected);
    assert_eq!(safety(&dir), Vec::<String>::new());
    let pool = &pools(&dir)["pool-a"];
    assert_eq!(
        pool.status.as_ref().unwrap().allocated_ip_count,
        Some(ok.len() as i64)
    );
}

#[test]
fn sigkill_to_random_plugins_in_embedded_mode() {
    let _serial = serial();
    let mut rng = Rng::new();
    let s = Scratch::new();
    apply(
        &s.data_dir(),
        vec![pool("pool-a", "10.66.0.10-10.66.0.109")],
    );
    let cs = containers(&s, N);
    let conf = pool_conf(&s, s.embedded_ipam());
    let mut children = start_all(&cs, &[conf]);
    // Kill about a third of them, at random moments of the run.
    let started = Instant::now();
    let mut victims: Vec<(Duration, usize)> = Vec::new();
    for i in 0..N {
        if rng.below(3) == 0 {
            victims.push((Duration::from_millis(rng.below(4000)), i));
        }
    }
    victims.sort();
    for (at, i) in &victims {
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let _ = children[*i].kill();
    }
    let (ok, failed) = outcomes(&cs, children);
    println!(
        "embedded: {} killed of which {} finished first; {} failed",
        victims.len(),
        victims.len() - failed.len(),
        failed.len()
    );
    for id in &failed {
        let i: usize = id[3..].parse().unwrap();
        assert!(
            victims.iter().any(|(_, v)| *v == i),
            "{id} failed without being killed; log: {}",
            s.log_text()
        );
    }
    settle_after_kills(&s, &cs, &ok);
}

#[test]
fn sigkill_to_the_agent_and_random_plugins_mid_flight() {
    let _serial = serial();
    let mut rng = Rng::new();
    let s = Scratch::new();
    let dir = s.data_dir();
    apply(&dir, vec![pool("pool-a", "10.66.0.10-10.66.0.109")]);
    let agent_log = s.dir.path().join("agent.log");
    let agent = AgentProcess::start(ENTRY, &dir, &s.socket(), &agent_log);
    let cs = containers(&s, N);
    let by_socket = pool_conf(&s, s.agent_ipam());
    let by_record = pool_conf(&s, s.embedded_ipam());
    let mut children = start_all(&cs, &[by_socket.clone(), by_record.clone()]);
    let agent_dies = Duration::from_millis(20 + rng.below(150));
    let mut victims: Vec<(Duration, usize)> = Vec::new();
    for i in 0..N {
        if rng.below(4) == 0 {
            victims.push((Duration::from_millis(rng.below(600)), i));
        }
    }
    victims.sort();
    let started = Instant::now();
    let mut agent = Some(agent);
    for (at, i) in &victims {
        if agent.is_some() && *at >= agent_dies {
            std::thread::sleep(agent_dies.saturating_sub(started.elapsed()));
            agent.take().unwrap().kill();
        }
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let _ = children[*i].kill();
    }
    if let Some(a) = agent.take() {
        std::thread::sleep(agent_dies.saturating_sub(started.elapsed()));
        a.kill();
    }
    let (ok, failed) = outcomes(&cs, children);
    println!(
        "agent killed after {agent_dies:?}; {} plugins killed; {} succeeded, {} failed",
        victims.len(),
        ok.len(),
        failed.len()
    );
    // The stale record sends the data-dir plugins to the lock: none of those that started
    // after the agent died failed unless killed.
    settle_after_kills(&s, &cs, &ok);

    // A restarted agent has everything it acknowledged: retried ADDs answer the same.
    let agent = AgentProcess::start(ENTRY, &dir, &s.socket(), &agent_log);
    for (i, c) in cs.iter().enumerate() {
        let Some(ip) = ok.get(&c.id) else { continue };
        let conf = if i % 2 == 0 { &by_socket } else { &by_record };
        let again = run(&attach_env("ADD", &c.id, "eth0", &c.netns, ""), conf);
        assert_eq!(again.ip(), *ip, "{}", c.id);
    }
    assert!(agent.terminate().success());
}

/// Not a check: prints what one ADD + DEL costs in each mode, and what opening the store
/// costs inside an embedded call (`cargo test --release --test concurrency timings --
/// --ignored --nocapture`).
#[test]
#[ignore]
fn timings() {
    let _serial = serial();
    let s = Scratch::new();
    apply(
        &s.data_dir(),
        vec![pool("pool-a", "10.66.0.10-10.66.0.109")],
    );
    let cs = containers(&s, 20);
    let mut debug = s.embedded_ipam();
    debug["default_ipv4_ippool"] = json!(["pool-a"]);
    let embedded = conf("0.3.1", "net-a", debug);
    let time = |label: &str, conf: &[u8]| {
        let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
        for c in &cs {
            let t = Instant::now();
            run(&attach_env("ADD", &c.id, "eth0", &c.netns, ""), conf).ok();
            add += t.elapsed();
            let t = Instant::now();
            run(&attach_env("DEL", &c.id, "eth0", &c.netns, ""), conf).ok();
            del += t.elapsed();
        }
        let n = cs.len() as u32;
        println!(
            "{label}: ADD {:?}, DEL {:?} (mean of {n})",
            add / n,
            del / n
        );
    };
    time("embedded", &embedded);
    let opens: Vec<f64> = s
        .log_text()
        .lines()
        .filter_map(|l| l.split("opened the store elapsed=").nth(1))
        .filter_map(|t| t.trim().strip_suffix("ms")?.parse().ok())
        .collect();
    println!(
        "sled open inside an embedded call: mean {:.1} ms over {} calls",
        opens.iter().sum::<f64>() / opens.len() as f64,
        opens.len()
    );
    let agent = AgentProcess::start(
        ENTRY,
        &s.data_dir(),
        &s.socket(),
        &s.dir.path().join("agent.log"),
    );
    time("agent", &pool_conf(&s, s.agent_ipam()));
    time(
        "embedded config, agent serving the data dir",
        &pool_conf(&s, s.embedded_ipam()),
    );
    assert!(agent.terminate().success());
}
