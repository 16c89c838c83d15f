//! The fault hooks do what the reliability tests of later issues need: the API server and etcd
//! die and come back, clients through the proxy meet black holes, resets, refusals, latency and
//! lost acknowledgements. The tests share one cluster and take turns, because each fault hits
//! every client of it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_testbed::{Options, SharedCluster};
use serde_json::json;

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);
/// One fault at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a call may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(60);

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

/// Waits, bounded, until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {HANG:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client through the fault proxy whose calls give up after `timeout` of silence.
async fn proxied_client(cluster: &kube_testbed::Cluster, timeout: Duration) -> kube::Client {
    let mut config = cluster.proxy_config().await.unwrap();
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_watcher_recovers_across_an_api_server_restart_and_misses_no_object() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("restart").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().unwrap(), ns.name());

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let watch = {
        let (seen, deleted) = (seen.clone(), deleted.clone());
        let mut events = watcher(maps.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                        seen.lock().unwrap().insert(m.metadata.name.unwrap());
                    }
                    Ok(watcher::Event::Delete(m)) => deleted.lock().unwrap().push(m.metadata.name),
                    _ => {}
                }
            }
        })
    };
    for i in 0..3 {
        maps.create(&PostParams::default(), &config_map(&format!("before-{i}")))
            .await
            .unwrap();
    }
    let before: BTreeSet<String> = (0..3).map(|i| format!("before-{i}")).collect();
    eventually("the watcher sees the first objects", || {
        seen.lock().unwrap().is_superset(&before)
    })
    .await;

    cluster.kill_apiserver();
    assert!(
        maps.get("before-0").await.is_err(),
        "a killed API server answers nothing"
    );
    cluster.restart_apiserver().await.unwrap();
    // Written at once, likely before the watcher is back: it must catch up from its version.
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().unwrap(), ns.name());
    for i in 0..3 {
        maps.create(&PostParams::default(), &config_map(&format!("after-{i}")))
            .await
            .unwrap();
    }
    // Every object, and nothing else but the controller-manager's kube-root-ca.crt.
    let mut expected = before;
    expected.extend((0..3).map(|i| format!("after-{i}")));
    eventually("the watcher sees every object", || {
        seen.lock().unwrap().is_superset(&expected)
    })
    .await;
    watch.abort();
    expected.insert("kube-root-ca.crt".into());
    assert_eq!(*seen.lock().unwrap(), expected);
    assert!(
        deleted.lock().unwrap().is_empty(),
        "{:?}",
        deleted.lock().unwrap()
    );
}

#[tokio::test]
async fn a_black_holed_connection_fails_a_call_within_its_timeout_instead_of_hanging() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let client = proxied_client(cluster, Duration::from_secs(2)).await;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .get("default")
        .await
        .expect("through the proxy, calls work");

    cluster.proxy().set_black_hole(true);
    let started = Instant::now();
    let held = tokio::time::timeout(HANG, namespaces.get("default")).await;
    let waited = started.elapsed();
    cluster.proxy().heal();
    let outcome = held.expect("the call hung past the test's limit despite the client's timeout");
    assert!(
        outcome.is_err(),
        "a black-holed call cannot succeed: {outcome:?}"
    );
    eprintln!(
        "black-holed call failed after {waited:?} (client timeout 2 s): {}",
        outcome.unwrap_err()
    );

    namespaces
        .get("default")
        .await
        .expect("once healed, calls work again");
}

#[tokio::test]
async fn a_write_can_happen_while_its_acknowledgement_is_lost() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("lost-ack").await.unwrap();
    let client = proxied_client(cluster, Duration::from_secs(10)).await;
    let through_proxy: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let direct: Api<ConfigMap> = Api::namespaced(cluster.client().unwrap(), ns.name());

    let lost = cluster.proxy().drop_next_mutation_response();
    let answer = through_proxy
        .create(&PostParams::default(), &config_map("written"))
        .await;
    assert!(
        answer.is_err(),
        "the client must not see the answer: {answer:?}"
    );
    let lost = lost.await.expect("the proxy reports the withheld answer");
    assert_eq!(lost.method, "POST");
    assert_eq!(lost.status, 201);
    assert!(
        lost.path
            .starts_with(&format!("/api/v1/namespaces/{}/configmaps", ns.name())),
        "{lost:?}"
    );
    assert!(
        direct.get_opt("written").await.unwrap().is_some(),
        "the write happened"
    );

    // One request only: the next write is answered.
    through_proxy
        .create(&PostParams::default(), &config_map("second"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_can_be_lost_on_the_way() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("lost-write").await.unwrap();
    let client = proxied_client(cluster, Duration::from_secs(10)).await;
    let through_proxy: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let direct: Api<ConfigMap> = Api::namespaced(cluster.client().unwrap(), ns.name());

    let lost = cluster.proxy().drop_next_mutation();
    // Reads pass.
    assert!(through_proxy.get_opt("lost").await.unwrap().is_none());
    let answer = through_proxy
        .create(&PostParams::default(), &config_map("lost"))
        .await;
    assert!(answer.is_err(), "the write cannot succeed: {answer:?}");
    let lost = lost.await.expect("the proxy reports the dropped request");
    assert_eq!((lost.method.as_str(), lost.status), ("POST", 0));
    assert!(
        direct.get_opt("lost").await.unwrap().is_none(),
        "the API server never saw it"
    );
    through_proxy
        .create(&PostParams::default(), &config_map("lost"))
        .await
        .expect("one request only");
}

#[tokio::test]
async fn resets_refusals_and_latency_reach_the_client() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("reset").await.unwrap();
    let client = proxied_client(cluster, Duration::from_secs(1)).await;
    let maps: Api<ConfigMap> = Api::namespaced(client, ns.name());

    // A reset ends an open watch.
    let mut stream = maps
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    cluster.proxy().reset_connections();
    let ended = tokio::time::timeout(HANG, async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a reset watch must end, not hang");
    maps.list(&Default::default())
        .await
        .expect("after a reset, new connections work");

    // While refusing, no call gets through.
    cluster.proxy().set_refuse(true);
    cluster.proxy().reset_connections();
    let refused = tokio::time::timeout(HANG, maps.list(&Default::default()))
        .await
        .unwrap();
    assert!(refused.is_err(), "{refused:?}");
    cluster.proxy().heal();
    maps.list(&Default::default()).await.expect("healed");

    // Latency beyond the client's timeout fails the call; none does not.
    cluster.proxy().set_latency(Duration::from_secs(3));
    let slow = tokio::time::timeout(HANG, maps.list(&Default::default()))
        .await
        .unwrap();
    assert!(slow.is_err(), "{slow:?}");
    cluster.proxy().heal();
    maps.list(&Default::default())
        .await
        .expect("no latency, no timeout");
}

#[tokio::test]
async fn a_paused_api_server_answers_nothing_until_it_resumes() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let mut config = cluster.config();
    config.read_timeout = Some(Duration::from_secs(2));
    config.connect_timeout = Some(Duration::from_secs(2));
    let namespaces: Api<Namespace> = Api::all(kube::Client::try_from(config).unwrap());
    namespaces.get("default").await.unwrap();

    cluster.pause_apiserver().unwrap();
    let frozen = tokio::time::timeout(HANG, namespaces.get("default")).await;
    cluster.resume_apiserver().unwrap();
    assert!(frozen.expect("the client's timeout must fire").is_err());
    let back = tokio::time::timeout(HANG, async {
        loop {
            if namespaces.get("default").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "a resumed API server answers again");
}

#[tokio::test]
async fn etcd_killed_and_restarted_keeps_every_acknowledged_write() {
    let _turn = TURN.lock().await;
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("etcd").await.unwrap();
    let mut config = cluster.config();
    config.read_timeout = Some(Duration::from_secs(5));
    let maps: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), ns.name());
    for i in 0..20 {
        maps.create(&PostParams::default(), &config_map(&format!("kept-{i}")))
            .await
            .unwrap();
    }

    cluster.kill_etcd();
    let without = tokio::time::timeout(
        HANG,
        maps.create(&PostParams::default(), &config_map("lost")),
    )
    .await;
    assert!(
        without.expect("bounded by the client's timeout").is_err(),
        "no write without etcd"
    );
    cluster.restart_etcd().await.unwrap();

    let maps: Api<ConfigMap> = Api::namespaced(cluster.client().unwrap(), ns.name());
    let names: BTreeSet<String> = maps
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .filter(|n| n.starts_with("kept-"))
        .collect();
    assert_eq!(
        names.len(),
        20,
        "every acknowledged write survives SIGKILL of etcd: {names:?}"
    );
    maps.create(&PostParams::default(), &config_map("after"))
        .await
        .unwrap();
}
