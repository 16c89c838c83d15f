//! `KubeStore` when the API server is unreachable (the fault proxy's black hole) or frozen
//! (SIGSTOP): every store method fails within the store's deadline with an error that says
//! "unavailable" (CNI code 11, try again later), and the store works again once the server
//! does. On a cluster of its own: a frozen API server costs the controller-manager its lease
//! (it exits), which the other tests' cluster must not suffer.

mod support;

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
    let bound = deadline + Duration::from_secs(2);
    macro_rules! fails_fast {
        ($($call:expr),* $(,)?) => {$(
            let start = Instant::now();
            let result = $call.await;
            let took = start.elapsed();
            assert!(took < bound, "{} took {took:?}", stringify!($call));
            match result {
                Err(e) => assert!(e.is_unavailable(), "{}: {e:?}", stringify!($call)),
                Ok(v) => panic!("{} succeeded: {v:?}", stringify!($call)),
            }
        )*};
    }
    fails_fast!(
        store.get(&key),
        store.list(Kind::SpiderIPPool, None, None),
        store.create(Kind::SpiderIPPool, pool.clone()),
        store.update(Kind::SpiderIPPool, pool.clone()),
        store.update_status(Kind::SpiderIPPool, pool.clone()),
        store.delete(&key, None),
        store.update_pool_records("unreachable", "1", &delta),
    );
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
    let deadline = Duration::from_secs(3);
    let store = store(cluster).await.deadline(deadline);

    cluster.pause_apiserver().unwrap();
    let frozen = std::panic::AssertUnwindSafe(every_method_fails_fast(&store, deadline));
    let outcome = futures::FutureExt::catch_unwind(frozen).await;
    cluster.resume_apiserver().unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    let name = unique_name("after-freeze");
    store.create_as(&pool(&name)).await.unwrap();
}
