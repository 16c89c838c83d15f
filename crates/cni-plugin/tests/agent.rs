//! The node agent: its store over the socket (the conformance suite through `AgentStore`),
//! `open_data_dir` with and without an agent, agent mode of `berth-ipam` (by socket and by
//! the data dir's record), clean SIGTERM, and a restart that keeps what it acknowledged.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_test_support::unique;
use cni_plugin::agent::protocol::AddArgs;
use cni_plugin::agent::{self, AgentClient, AgentOptions, AgentStore, record};
use cni_plugin::{DataDirOptions, DataDirStore, open_data_dir};
use ipam_core::engine::Engine;
use ipam_core::store::{MemStore, Store, TypedStore, conformance};
use ipam_core::{Kind, ObjectKey, SpiderIPPool};
use ipam_store_sled::{OpenOptions, SledStore};
use serde_json::{Value, json};
use support::*;
use tokio::sync::oneshot;

/// Re-executed by [`AgentProcess::start`]: runs the agent when asked to, else nothing.
#[test]
fn agent_process_entry() {
    agent_entry();
}

const ENTRY: &str = "agent_process_entry";

/// An agent serving `engine` in this process on a fresh socket; stops when the sender is
/// dropped or fired.
async fn in_process_agent<S: Store + 'static>(
    engine: Arc<Engine<S>>,
    dir: &Path,
    data_dir: Option<PathBuf>,
) -> (PathBuf, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let socket = dir.join(unique("s")).with_extension("sock");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = AgentOptions {
        socket: socket.clone(),
        data_dir,
    };
    let listening = agent::bind(&options).await.unwrap();
    let task = tokio::spawn(async move {
        listening
            .serve(engine, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (socket, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_store_passes_the_conformance_suite_but_watch() {
    let scratch = Scratch::new();
    macro_rules! check {
        ($($name:ident),* $(,)?) => {$(
            let engine = Arc::new(Engine::new(MemStore::new()));
            let (socket, stop, task) = in_process_agent(engine, scratch.dir.path(), None).await;
            conformance::$name(&AgentStore::new(&socket)).await;
            drop(stop);
            task.await.unwrap();
            assert!(!socket.exists(), "the socket is removed at stop");
        )*};
    }
    check!(
        create_then_get,
        create_twice_is_already_exists,
        stale_update_is_conflict,
        update_keeps_status_and_update_status_keeps_spec,
        identity_fields_belong_to_the_store,
        delete_with_precondition,
        finalizers_hold_deletion,
        list_by_kind_namespace_and_label,
        missing_objects_are_not_found,
        typed_round_trip,
        concurrent_writers_lose_no_update,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_a_live_one_is_not_taken_over() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let nested = scratch.dir.path().join("a/b");
    let engine = Arc::new(Engine::new(MemStore::new()));
    let (socket, stop, task) = in_process_agent(Arc::clone(&engine), &nested, None).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = agent::serve(
        engine,
        &AgentOptions {
            socket: socket.clone(),
            data_dir: None,
        },
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        second.to_string().contains("another agent listens"),
        "{second}"
    );
    drop(stop);
    task.await.unwrap();

    // A stale socket file is replaced.
    let stale = scratch.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let engine = Arc::new(Engine::new(MemStore::new()));
    let (stop, stopped) = oneshot::channel::<()>();
    let options = AgentOptions {
        socket: stale.clone(),
        data_dir: None,
    };
    let listening = agent::bind(&options).await.unwrap();
    assert!(
        record::socket_is_live(&stale),
        "the socket listens once bind returns"
    );
    let task = tokio::spawn(async move {
        listening
            .serve(engine, async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    drop(stop);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_data_dir_goes_through_a_live_agent_and_the_lock_otherwise() {
    let scratch = Scratch::new();
    let dir = scratch.data_dir();
    let options = DataDirOptions::default();
    // No agent: the sled store, under the lock.
    let store = open_data_dir(&dir, &options).await.unwrap();
    assert!(matches!(store, DataDirStore::Sled(_)));
    let pool = SpiderIPPool::new(
        "pool-a",
        "10.66.0.0/16".parse().unwrap(),
        ipam_core::ips!["10.66.0.10-10.66.0.20"],
    );
    store.create_as(&pool).await.unwrap();
    drop(store);

    // An agent serves the data dir: its store, over the socket.
    let socket = scratch.socket();
    let (stop, stopped) = oneshot::channel::<()>();
    let bound = agent::bind_data_dir(&dir, &socket).await.unwrap();
    assert_eq!(
        record::live_agent(&dir).await.as_deref(),
        Some(socket.as_path())
    );
    let agent = tokio::spawn(async move {
        bound
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    let store = open_data_dir(&dir, &options).await.unwrap();
    assert_eq!(store.agent_socket(), Some(socket.as_path()));
    let got: SpiderIPPool = store.get_as(None, "pool-a").await.unwrap().unwrap();
    assert_eq!(got.metadata.name, "pool-a");
    // The same errors as the store's own.
    let missing = ObjectKey::cluster(Kind::SpiderIPPool, "nope");
    assert!(matches!(
        store.delete(&missing, None).await,
        Err(ipam_core::Error::NotFound(k)) if k == missing
    ));
    assert!(matches!(
        store.create_as(&pool).await,
        Err(ipam_core::Error::AlreadyExists(_))
    ));
    let mut stale = got.clone();
    stale.spec.disable = Some(true);
    store.update_as(&stale).await.unwrap();
    let stale = store.update_as(&stale).await;
    assert!(
        matches!(stale, Err(ipam_core::Error::Conflict(_))),
        "{stale:?}"
    );
    // A second agent on the same data dir is refused.
    let e = agent::serve_data_dir(&dir, &scratch.dir.path().join("other.sock"), async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already served"), "{e}");

    // Stopping removes the record and the socket and releases the lock.
    stop.send(()).unwrap();
    agent.await.unwrap();
    assert!(!socket.exists());
    assert_eq!(record::read_record(&dir), None);
    let store = open_data_dir(&dir, &options).await.unwrap();
    assert!(matches!(store, DataDirStore::Sled(_)));
    drop(store);

    // A stale record (nothing listens) is ignored.
    std::fs::write(record::record_path(&dir), format!("{}\n", socket.display())).unwrap();
    let store = open_data_dir(&dir, &options).await.unwrap();
    assert!(matches!(store, DataDirStore::Sled(_)));
}

#[test]
fn agent_mode_by_socket_and_by_record_survives_a_restart() {
    let s = Scratch::new();
    let dir = s.data_dir();
    apply(&dir, vec![pool("pool-a", "10.66.0.10-10.66.0.40")]);
    let agent_log = s.dir.path().join("agent.log");
    let agent = AgentProcess::start(ENTRY, &dir, &s.socket(), &agent_log);

    let mut by_socket = s.agent_ipam();
    by_socket["default_ipv4_ippool"] = json!(["pool-a"]);
    let mut by_record = s.embedded_ipam();
    by_record["default_ipv4_ippool"] = json!(["pool-a"]);
    let ns = s.fake_netns("a");
    let ns = ns.to_str().unwrap();
    let mut results = Vec::new();
    for (cid, ipam) in [("c1", &by_socket), ("c2", &by_record)] {
        for version in ["0.3.1", "0.4.0", "1.0.0"] {
            let conf = conf(version, "net-a", ipam.clone());
            let cid = format!("{cid}-{version}");
            let r = run(&attach_env("ADD", &cid, "eth0", ns, ""), &conf).ok();
            assert_eq!(r["cniVersion"], version);
            assert_eq!(
                r["routes"],
                json!([{"dst": "0.0.0.0/0", "gw": "10.66.0.1"}])
            );
            // Retried ADD, CHECK.
            assert_eq!(run(&attach_env("ADD", &cid, "eth0", ns, ""), &conf).ok(), r);
            if version != "0.3.1" {
                let prev = with(&conf, json!({"prevResult": r}));
                run(&attach_env("CHECK", &cid, "eth0", ns, ""), &prev).ok();
            }
            results.push((cid, conf, r));
        }
    }
    let log = s.log_text();
    assert!(log.contains("agent mode on"), "{log}");
    assert!(log.contains("served by a berth agent"), "{log}");
    // CNI errors travel through the agent with their code.
    let mut unknown = by_socket.clone();
    unknown["default_ipv4_ippool"] = json!(["nope"]);
    let e = run(
        &attach_env("ADD", "cx", "eth0", ns, ""),
        &conf("1.0.0", "net-a", unknown),
    )
    .err();
    assert_eq!(e["code"], 101, "{e}");
    assert_eq!(e["cniVersion"], "1.0.0", "written in the request's version");
    let e = run(
        &attach_env("ADD", "cx", "eth0", ns, "BERTH_OWNER=Deployment/nope"),
        &conf("1.0.0", "net-a", by_socket.clone()),
    )
    .err();
    assert_eq!(e["code"], 104, "{e}");
    let status = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0", "net-a", by_socket.clone()),
    );
    status.ok();

    // SIGTERM: clean stop, no socket, no record.
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    assert!(!s.socket().exists());
    assert_eq!(record::read_record(&dir), None);
    // Agent mode without an agent: code 103 naming the socket; STATUS says 50.
    let e = run(&attach_env("ADD", "cy", "eth0", ns, ""), &results[0].1).err();
    assert_eq!(e["code"], 103, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("agent.sock"), "{e}");
    let e = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0", "net-a", by_socket.clone()),
    )
    .err();
    assert_eq!(e["code"], 50, "{e}");
    // Everything acknowledged is there after the stop.
    let held = held(&dir);
    assert_eq!(held.len(), results.len());

    // A restarted agent answers the retried ADDs the same, and DEL releases.
    let agent = AgentProcess::start(ENTRY, &dir, &s.socket(), &agent_log);
    for (cid, conf, r) in &results {
        assert_eq!(&run(&attach_env("ADD", cid, "eth0", ns, ""), conf).ok(), r);
        run(&attach_env("DEL", cid, "eth0", ns, ""), conf).ok();
    }
    run(
        &attach_env("DEL", "never-seen", "eth0", ns, ""),
        &results[0].1,
    )
    .ok();
    // CNI GC through the agent.
    let a = conf("1.1.0", "net-a", by_socket.clone());
    run(&attach_env("ADD", "g1", "eth0", ns, ""), &a).ok();
    run(&attach_env("ADD", "g2", "eth0", ns, ""), &a).ok();
    run(
        &[("CNI_COMMAND", "GC")],
        &with(
            &a,
            json!({"cni.dev/valid-attachments": [{"containerID": "g1", "ifname": "eth0"}]}),
        ),
    )
    .ok();
    assert!(agent.terminate().success());
    let held: Vec<String> = support::held(&dir).into_values().collect();
    assert_eq!(held, vec!["g1".to_string()]);
    let agent_log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(agent_log.contains("berth agent stopped"), "{agent_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_and_bad_bodies() {
    let scratch = Scratch::new();
    let engine = Arc::new(Engine::new(MemStore::new()));
    let (socket, stop, task) = in_process_agent(engine, scratch.dir.path(), None).await;
    let client = agent::AgentClient::new(&socket);
    let a = client
        .request(http::Method::GET, "/v1/nope", None)
        .await
        .unwrap();
    assert_eq!(a.status, http::StatusCode::NOT_FOUND);
    let a = client
        .request(http::Method::GET, "/v1/ipam/ip", None)
        .await
        .unwrap();
    assert_eq!(a.status, http::StatusCode::METHOD_NOT_ALLOWED);
    let a = client
        .request(http::Method::POST, "/v1/ipam/ip", Some(b"{".to_vec()))
        .await
        .unwrap();
    assert_eq!(a.status, http::StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["code"], 6, "{v}");
    // The agent checks what the plugin would have checked.
    let mut bad = add_args(1);
    bad.container_id = "../x".into();
    assert_eq!(client.add(&bad).await.unwrap_err().code(), 4);
    let mut bad = add_args(1);
    bad.pod_name = String::new();
    assert_eq!(client.add(&bad).await.unwrap_err().code(), 7);
    let a = client
        .request(
            http::Method::POST,
            "/v1/store/list",
            Some(br#"{"kind": "Pod"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(a.status, http::StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["error"], "Backend", "{v}");
    client.healthy().await.unwrap();
    drop(stop);
    task.await.unwrap();
}

fn add_args(i: usize) -> AddArgs {
    AddArgs {
        container_id: format!("c{i}"),
        if_name: "eth0".into(),
        pod_name: format!("p{i}"),
        pod_uid: format!("u{i}"),
        default_ipv4_ippool: vec!["pool-a".into()],
        network: Some("net-a".into()),
        ..AddArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_flushes_and_a_stop_finishes_what_it_accepted() {
    let s = Scratch::new();
    let store = SledStore::open(s.data_dir(), OpenOptions::new()).unwrap();
    let engine = Arc::new(Engine::new(store));
    engine
        .apply(pool("pool-a", "10.66.0.10-10.66.0.109"))
        .await
        .unwrap();
    let (socket, stop, task) = in_process_agent(Arc::clone(&engine), s.dir.path(), None).await;

    // 64 requests at once run concurrently: their writes share flushes.
    let before = engine.store().stats();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64 {
        let client = AgentClient::new(&socket);
        calls.spawn(async move { client.add(&add_args(i)).await });
    }
    let mut ips = std::collections::BTreeSet::new();
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(ips.insert(r.ips[0].address.addr()));
    }
    let after = engine.store().stats();
    let (writes, flushes) = (after.writes - before.writes, after.flushes - before.flushes);
    println!("64 concurrent ADDs: {writes} writes, {flushes} flushes");
    assert!(flushes < writes, "{writes} writes took {flushes} flushes");

    // Stop while requests are in flight: what was accepted is answered and durable, the
    // rest never reached the store.
    for i in 64..96 {
        let client = AgentClient::new(&socket);
        calls.spawn(async move { client.add(&add_args(i)).await });
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    let mut answered = 0;
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            Ok(r) => {
                answered += 1;
                assert!(ips.insert(r.ips[0].address.addr()));
            }
            Err(e) => assert_eq!(e.code(), 103, "{e}"),
        }
    }
    println!("stopped with requests in flight: {answered} of 32 answered");
    let held: usize = engine
        .records()
        .await
        .unwrap()
        .values()
        .map(|r| r.len())
        .sum();
    assert_eq!(held, 64 + answered);
}

#[test]
fn clean_gateway_and_pool_routes_in_agent_mode() {
    let s = Scratch::new();
    let dir = s.data_dir();
    let ipam_core::engine::AnyObject::Pool(mut p) = pool("pool-r", "10.66.0.10-10.66.0.20") else {
        unreachable!()
    };
    p.spec.routes = Some(vec![ipam_core::Route {
        dst: "10.96.0.0/12".parse().unwrap(),
        gw: "10.66.0.254".parse().unwrap(),
    }]);
    apply(&dir, vec![ipam_core::engine::AnyObject::Pool(p)]);
    let _agent = AgentProcess::start(ENTRY, &dir, &s.socket(), &s.dir.path().join("agent.log"));
    let ns = s.fake_netns("r");
    let ns = ns.to_str().unwrap();
    let mut ipam = s.agent_ipam();
    ipam["default_ipv4_ippool"] = json!(["pool-r"]);
    let r = run(
        &attach_env("ADD", "c1", "eth0", ns, ""),
        &conf("1.0.0", "n", ipam.clone()),
    )
    .ok();
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "10.66.0.1"},
            {"dst": "10.96.0.0/12", "gw": "10.66.0.254"}
        ])
    );
    ipam["clean_gateway"] = json!(true);
    let r = run(
        &attach_env("ADD", "c2", "eth0", ns, ""),
        &conf("1.0.0", "n", ipam),
    )
    .ok();
    assert_eq!(r["ips"][0]["gateway"], "10.66.0.1", "the gateway stays");
    assert_eq!(
        r["routes"],
        json!([{"dst": "10.96.0.0/12", "gw": "10.66.0.254"}])
    );
}
