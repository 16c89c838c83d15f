//! `KubeStore` when the API server is unreachable (the fault proxy's black hole) or frozen
//! (SIGSTOP): every store method fails within the store's deadline with an error that says
//! "unavailable" (for CNI code 11, try again later), and the store works again once the server
//! does; and a watch whose history the restarted API server no longer has reports `Lost`, then
//! follows. On a cluster of their own: these faults hit every client of the cluster, and can
//! cost the controller-manager its lease (it exits), which the other tests must not suffer.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipam_core::store::{RecordsDelta, Store, TypedStore, WatchEvent};
use ipam_core::{Kind, ObjectKey};
use ipam_store_k8s::KubeStore;
use kube_testbed::{Cluster, Options, SharedCluster, unique_name};
use support::{LIMIT, installed, pool, store};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

/// One fault at a time: each hits every client of the API server.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> &'static Cluster {
    installed(&CLUSTER).await
}

/// Every store method fails with an unavailable error within the deadline.
async fn every_method_fails_fast(store: &KubeStore, deadline: Duration) {
    let key = ObjectKey::cluster(Kind::SpiderIPPool, "unreachable");
    let pool = serde_json::to_value(pool("unreachable")).unwrap();
    let delta = RecordsDelta::default();
    fails_fast("get", deadline, store.get(&key)).await;
    let list = store.list(Kind::SpiderIPPool, None, None);
    fails_fast("list", deadline, list).await;
    let create = store.create(Kind::SpiderIPPool, pool.clone());
    fails_fast("create", deadline, create).await;
    let update = store.update(Kind::SpiderIPPool, pool.clone());
    fails_fast("update", deadline, update).await;
    let update_status = store.update_status(Kind::SpiderIPPool, pool);
    fails_fast("update_status", deadline, update_status).await;
    fails_fast("delete", deadline, store.delete(&key, None)).await;
    let records = store.update_pool_records("unreachable", "1", &delta);
    fails_fast("update_pool_records", deadline, records).await;
}

/// `call` fails with an unavailable error, within the store's deadline (and a margin).
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    deadline: Duration,
    call: impl Future<Output = Result<T, ipam_core::Error>>,
) {
    let start = Instant::now();
    let result = call.await;
    let took = start.elapsed();
    assert!(
        took < deadline + Duration::from_secs(2),
        "{what} took {took:?}"
    );
    match result {
        Err(e) => assert!(e.is_unavailable(), "{what}: {e:?}"),
        Ok(v) => panic!("{what} succeeded: {v:?}"),
    }
}

/// Waits until a store can be made on `cluster` again.
async fn until_answering(cluster: &Cluster) {
    let answering = async {
        while KubeStore::new(cluster.client().unwrap()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(LIMIT, answering)
        .await
        .expect("the API server answers again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_api_server_is_an_unavailable_error_within_the_deadline() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let client = kube::Client::try_from(cluster.proxy_config().await.unwrap()).unwrap();
    let deadline = Duration::from_secs(3);
    let store = KubeStore::new(client).await.unwrap().deadline(deadline);
    let mut watch = store.watch(Kind::SpiderIPPool);

    cluster.proxy().set_black_hole(true);
    every_method_fails_fast(&store, deadline).await;
    cluster.proxy().heal();

    // Healed, the same store works again, and its watch did not die with the connection (it
    // may take a watch's silence limit to notice a connection that stayed dead).
    let name = unique_name("after-black-hole");
    let created = store.create_as(&pool(&name)).await.unwrap();
    let reported = WatchEvent::Changed {
        key: ObjectKey::cluster(Kind::SpiderIPPool, &name),
        version: created.metadata.resource_version.clone(),
    };
    let wait = async { while watch.next().await.expect("the watch ended") != reported {} };
    tokio::time::timeout(2 * LIMIT, wait)
        .await
        .expect("the watch did not recover from the black hole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_api_server_is_an_unavailable_error_within_the_deadline() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    // Frozen for about the deadline only (the black hole covers every method), with reads and
    // writes at once: much longer, and the controller-manager loses its lease and exits.
    let deadline = Duration::from_secs(2);
    let store = store(cluster).await.deadline(deadline);
    let key = ObjectKey::cluster(Kind::SpiderIPPool, "frozen");
    let delta = RecordsDelta::default();

    cluster.pause_apiserver().unwrap();
    let frozen = std::panic::AssertUnwindSafe(async {
        futures::join!(
            fails_fast("get", deadline, store.get(&key)),
            fails_fast("list", deadline, store.list(Kind::SpiderIPPool, None, None)),
            fails_fast(
                "update_pool_records",
                deadline,
                store.update_pool_records("frozen", "1", &delta)
            ),
        )
    });
    let outcome = futures::FutureExt::catch_unwind(frozen).await;
    cluster.resume_apiserver().unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    let name = unique_name("after-freeze");
    store.create_as(&pool(&name)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_history_is_gone_reports_lost_then_follows() {
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    // `old` has seen nothing since it was made; `writer` then moves the cluster on.
    let old = store(cluster).await;
    let writer = store(cluster).await;
    for _ in 0..3 {
        writer
            .create_as(&pool(&unique_name("history")))
            .await
            .unwrap();
    }
    // A restarted API server's watch cache starts at the current version: the history `old`
    // would watch from is no longer served.
    cluster.kill_apiserver();
    match cluster.restart_apiserver().await {
        Ok(()) => {}
        // The controller-manager may lose its lease meanwhile and exit; the store needs it not.
        Err(kube_testbed::Error::Exited { component, .. })
            if component == "kube-controller-manager" || component == "kube-scheduler" =>
        {
            until_answering(cluster).await;
        }
        Err(e) => panic!("restarting the API server: {e}"),
    }
    let mut watch = old.watch(Kind::SpiderIPPool);
    assert_eq!(
        tokio::time::timeout(LIMIT, watch.next()).await.unwrap(),
        Some(WatchEvent::Lost),
        "the first event says the history is gone"
    );
    let name = unique_name("after-lost");
    let created = writer.create_as(&pool(&name)).await.unwrap();
    let reported = WatchEvent::Changed {
        key: ObjectKey::cluster(Kind::SpiderIPPool, &name),
        version: created.metadata.resource_version.clone(),
    };
    let wait = async { while watch.next().await.expect("the watch ended") != reported {} };
    tokio::time::timeout(LIMIT, wait)
        .await
        .expect("the watch did not follow after Lost");
}

/// A refusal (403) is asked again for a few seconds, as an API server that has just started
/// refuses until its authorizer has read the roles: a read refused when it starts succeeds
/// once the user is granted the right, and a refusal that lasts fails after
/// `FORBIDDEN_GRACE`, saying "forbidden".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_asked_again_for_a_moment_then_returned() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, DeleteParams, PostParams};
    use kube_testbed::pki::Identity;
    // The other tests here freeze or black-hole the API server: not meanwhile.
    let _turn = TURN.lock().await;
    let cluster = cluster().await;
    let user = unique_name("grace");
    let admin = cluster.client().unwrap();
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(admin);
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "rules": [{"apiGroups": ["spiderpool.spidernet.io"], "resources": ["*"],
                   "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    let grant = || async {
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    };
    let key = ObjectKey::cluster(Kind::SpiderIPPool, "grace");
    let kubeconfig = cluster.kubeconfig_for(&Identity::new(&user, None)).unwrap();
    grant().await;
    let store = eventually(|| KubeStore::from_kubeconfig(&kubeconfig)).await;

    // Refused from now on: the binding goes, and a plain read sees it.
    bindings
        .delete(&user, &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    while store.get(&key).await.is_ok() {
        assert!(started.elapsed() < LIMIT, "the refusal never took effect");
    }

    // A refusal that lasts: returned after the grace, naming it.
    let started = Instant::now();
    let refused = store.get(&key).await.unwrap_err();
    let refused = std::iter::successors(Some(&refused as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    let took = started.elapsed();
    let grace = ipam_store_k8s::FORBIDDEN_GRACE;
    assert!(refused.contains("forbidden"), "{refused}");
    assert!(
        took >= grace - Duration::from_secs(1) && took < grace + Duration::from_secs(2),
        "{took:?}"
    );

    // Granted while the read is refused: it succeeds (nothing is stored under that name).
    let read = tokio::spawn({
        let store = store.clone();
        let key = key.clone();
        async move {
            let started = Instant::now();
            (store.get(&key).await, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    grant().await;
    let (got, took) = read.await.unwrap();
    assert!(got.unwrap().is_none());
    assert!(
        took >= Duration::from_millis(1400),
        "it was refused first: {took:?}"
    );
    roles.delete(&user, &DeleteParams::default()).await.unwrap();
    bindings
        .delete(&user, &DeleteParams::default())
        .await
        .unwrap();
}

/// `make` until it succeeds (RBAC grants take a moment to reach the authorizer).
async fn eventually<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    make: impl Fn() -> F,
) -> T {
    let started = Instant::now();
    loop {
        match make().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(started.elapsed() < LIMIT, "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
