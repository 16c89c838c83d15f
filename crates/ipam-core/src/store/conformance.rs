//! The conformance suite every [`Store`] backend runs.
//!
//! Call [`run_all`] from a backend's tests with a function that makes a fresh, empty store; each
//! check gets its own store and panics with the check's name on the first violation.
//!
//! A store is tested on what it promises: the checks that write a kind skip it when
//! [`Store::writes`] says the store only reads it (the Kubernetes store and apps/v1 workloads).
//! Every document the checks write is one the API server accepts under Berth's CRDs.
//!
//! ```no_run
//! // In a backend's tests, under a tokio runtime with timers (the watch check waits):
//! async fn conformance() {
//!     ipam_core::store::conformance::run_all(ipam_core::store::MemStore::new).await;
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{Deleted, Store, TypedStore, WatchEvent};
use crate::error::Error;
use crate::meta::{Kind, LabelSelector, Object, ObjectKey};
use crate::pool::SpiderIPPool;

/// Runs every check, each on a store from `make`.
pub async fn run_all<S: Store, F: Fn() -> S>(make: F) {
    create_then_get(&make()).await;
    create_twice_is_already_exists(&make()).await;
    stale_update_is_conflict(&make()).await;
    update_keeps_status_and_update_status_keeps_spec(&make()).await;
    identity_fields_belong_to_the_store(&make()).await;
    delete_with_precondition(&make()).await;
    finalizers_hold_deletion(&make()).await;
    list_by_kind_namespace_and_label(&make()).await;
    missing_objects_are_not_found(&make()).await;
    typed_round_trip(&make()).await;
    concurrent_writers_lose_no_update(&make()).await;
    watch_reports_writes(&make()).await;
    pool_records_change_under_the_pools_version(&make()).await;
    workloads_are_stored_as_written(&make()).await;
}

fn pool(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name, "labels": labels},
        "spec": {"subnet": "10.0.0.0/24", "ips": ["10.0.0.10-10.0.0.20"]},
    })
}

/// A SpiderEndpoint status with what its CRD requires.
fn endpoint_status(uid: &str) -> Value {
    json!({
        "current": {"uid": uid, "node": "node1", "ips": [{"interface": "eth0", "vlan": 0}]},
        "ownerControllerType": "Pod",
        "ownerControllerName": "pod-0",
    })
}

fn version(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("stored objects carry a resourceVersion")
        .to_string()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::cluster(Kind::SpiderIPPool, name)
}

/// A created object reads back with uid, creation time and version set.
pub async fn create_then_get(s: &impl Store) {
    let created = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap_or_default();
    assert!(!uid.is_empty(), "create_then_get: no uid");
    assert!(
        created["metadata"]["creationTimestamp"].is_string(),
        "create_then_get: no creation time"
    );
    let got = s
        .get(&key("a"))
        .await
        .unwrap()
        .expect("create_then_get: object missing");
    assert_eq!(
        got, created,
        "create_then_get: read differs from what create returned"
    );
    assert_eq!(got["spec"]["ips"], json!(["10.0.0.10-10.0.0.20"]));
}

/// A second create of one key fails with `AlreadyExists` and changes nothing.
pub async fn create_twice_is_already_exists(s: &impl Store) {
    let first = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let mut again = pool("a", json!({}));
    again["spec"]["ips"] = json!(["10.0.0.30"]);
    match s.create(Kind::SpiderIPPool, again).await {
        Err(Error::AlreadyExists(k)) => assert_eq!(k, key("a")),
        other => panic!("create_twice_is_already_exists: got {other:?}"),
    }
    assert_eq!(s.get(&key("a")).await.unwrap().unwrap(), first);
}

/// Writes with a stale version fail with `Conflict`; versions change on every write.
pub async fn stale_update_is_conflict(s: &impl Store) {
    let v1 = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let mut next = v1.clone();
    next["spec"]["ips"] = json!(["10.0.0.11"]);
    let v2 = s.update(Kind::SpiderIPPool, next).await.unwrap();
    assert_ne!(
        version(&v1),
        version(&v2),
        "stale_update_is_conflict: version unchanged"
    );
    let mut stale = v1.clone();
    stale["spec"]["ips"] = json!(["10.0.0.12"]);
    assert!(
        matches!(
            s.update(Kind::SpiderIPPool, stale.clone()).await,
            Err(Error::Conflict(_))
        ),
        "stale_update_is_conflict: stale update accepted"
    );
    stale["status"] = json!({"allocatedIPCount": 1});
    assert!(
        matches!(
            s.update_status(Kind::SpiderIPPool, stale).await,
            Err(Error::Conflict(_))
        ),
        "stale_update_is_conflict: stale status update accepted"
    );
    let mut st = v2.clone();
    st["status"] = json!({"allocatedIPCount": 0});
    let v3 = s.update_status(Kind::SpiderIPPool, st).await.unwrap();
    assert_ne!(
        version(&v2),
        version(&v3),
        "stale_update_is_conflict: status write kept the version"
    );
    assert_eq!(
        s.get(&key("a")).await.unwrap().unwrap()["spec"]["ips"],
        json!(["10.0.0.11"])
    );
}

/// `update` leaves the status alone; `update_status` leaves everything else alone.
pub async fn update_keeps_status_and_update_status_keeps_spec(s: &impl Store) {
    let v1 = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let mut st = v1.clone();
    st["status"] = json!({"allocatedIPCount": 2});
    st["spec"]["ips"] = json!(["10.0.0.99"]);
    st["metadata"]["labels"] = json!({"x": "y"});
    let v2 = s.update_status(Kind::SpiderIPPool, st).await.unwrap();
    assert_eq!(v2["status"]["allocatedIPCount"], 2);
    assert_eq!(
        v2["spec"]["ips"],
        json!(["10.0.0.10-10.0.0.20"]),
        "update_status changed spec"
    );
    assert_eq!(
        v2["metadata"]["labels"], v1["metadata"]["labels"],
        "update_status changed labels"
    );
    let mut sp = v2.clone();
    sp["spec"]["ips"] = json!(["10.0.0.10"]);
    sp["status"] = json!({"allocatedIPCount": 7});
    let v3 = s.update(Kind::SpiderIPPool, sp).await.unwrap();
    assert_eq!(v3["spec"]["ips"], json!(["10.0.0.10"]));
    assert_eq!(v3["status"]["allocatedIPCount"], 2, "update changed status");
    // A kind without a status subresource is written whole by update. (The status has the
    // fields the SpiderEndpoint CRD requires: an API server refuses it without them.)
    let ep =
        json!({"metadata": {"name": "pod-0", "namespace": "ns"}, "status": endpoint_status("u")});
    let e1 = s.create(Kind::SpiderEndpoint, ep).await.unwrap();
    let mut e2 = e1.clone();
    e2["status"]["current"]["uid"] = json!("u2");
    let e2 = s.update(Kind::SpiderEndpoint, e2).await.unwrap();
    assert_eq!(
        e2["status"]["current"]["uid"], "u2",
        "endpoint status not written by update"
    );
}

/// uid and creation time are the store's: an update cannot change them.
pub async fn identity_fields_belong_to_the_store(s: &impl Store) {
    let v1 = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let mut forged = v1.clone();
    forged["metadata"]["uid"] = json!("forged");
    forged["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
    let v2 = s.update(Kind::SpiderIPPool, forged).await.unwrap();
    assert_eq!(v2["metadata"]["uid"], v1["metadata"]["uid"]);
    assert!(v2["metadata"].get("deletionTimestamp").is_none());
    assert_eq!(
        v2["metadata"]["creationTimestamp"],
        v1["metadata"]["creationTimestamp"]
    );
}

/// Delete with a stale precondition fails; with the right one, or none, it removes.
pub async fn delete_with_precondition(s: &impl Store) {
    let v1 = s
        .create(Kind::SpiderIPPool, pool("a", json!({})))
        .await
        .unwrap();
    let mut next = v1.clone();
    next["spec"]["ips"] = json!(["10.0.0.11"]);
    let v2 = s.update(Kind::SpiderIPPool, next).await.unwrap();
    assert!(
        matches!(
            s.delete(&key("a"), Some(&version(&v1))).await,
            Err(Error::Conflict(_))
        ),
        "delete_with_precondition: stale precondition accepted"
    );
    assert_eq!(
        s.delete(&key("a"), Some(&version(&v2))).await.unwrap(),
        Deleted::Gone
    );
    assert!(s.get(&key("a")).await.unwrap().is_none());
    s.create(Kind::SpiderIPPool, pool("b", json!({})))
        .await
        .unwrap();
    assert_eq!(s.delete(&key("b"), None).await.unwrap(), Deleted::Gone);
}

/// An object with finalizers is only marked terminating; removing the last finalizer removes it.
pub async fn finalizers_hold_deletion(s: &impl Store) {
    let mut p = pool("a", json!({}));
    p["metadata"]["finalizers"] = json!(["spiderpool.spidernet.io"]);
    s.create(Kind::SpiderIPPool, p).await.unwrap();
    let terminating = match s.delete(&key("a"), None).await.unwrap() {
        Deleted::Terminating(v) => v,
        Deleted::Gone => panic!("finalizers_hold_deletion: removed despite a finalizer"),
    };
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    let got = s
        .get(&key("a"))
        .await
        .unwrap()
        .expect("still there while terminating");
    assert_eq!(got, terminating);
    // Deleting again keeps it terminating; status writes still work.
    assert!(matches!(
        s.delete(&key("a"), None).await.unwrap(),
        Deleted::Terminating(_)
    ));
    let mut st = s.get(&key("a")).await.unwrap().unwrap();
    st["status"] = json!({"allocatedIPCount": 0});
    let st = s.update_status(Kind::SpiderIPPool, st).await.unwrap();
    let mut done = st.clone();
    done["metadata"]["finalizers"] = json!([]);
    s.update(Kind::SpiderIPPool, done).await.unwrap();
    assert!(
        s.get(&key("a")).await.unwrap().is_none(),
        "finalizers_hold_deletion: not removed with its last finalizer"
    );
}

/// List filters by kind, namespace and label selector, ordered by namespace and name.
pub async fn list_by_kind_namespace_and_label(s: &impl Store) {
    s.create(
        Kind::SpiderIPPool,
        pool("b", json!({"app": "x", "tier": "web"})),
    )
    .await
    .unwrap();
    s.create(Kind::SpiderIPPool, pool("a", json!({"app": "x"})))
        .await
        .unwrap();
    s.create(Kind::SpiderIPPool, pool("c", json!({"app": "y"})))
        .await
        .unwrap();
    for (ns, name) in [("ns2", "e"), ("ns1", "e"), ("ns1", "d")] {
        let ep = json!({"metadata": {"name": name, "namespace": ns}});
        s.create(Kind::SpiderEndpoint, ep).await.unwrap();
    }
    let names = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|o| {
                let m = &o["metadata"];
                match m["namespace"].as_str() {
                    Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap()),
                    None => m["name"].as_str().unwrap().to_string(),
                }
            })
            .collect()
    };
    let all = s.list(Kind::SpiderIPPool, None, None).await.unwrap();
    assert_eq!(names(all), ["a", "b", "c"]);
    let current = s
        .list_current(Kind::SpiderIPPool, None, None)
        .await
        .unwrap();
    assert_eq!(names(current), ["a", "b", "c"], "list_current");
    let x = LabelSelector::eq([("app", "x")]);
    assert_eq!(
        names(s.list(Kind::SpiderIPPool, None, Some(&x)).await.unwrap()),
        ["a", "b"]
    );
    let web = LabelSelector::eq([("app", "x"), ("tier", "web")]);
    assert_eq!(
        names(s.list(Kind::SpiderIPPool, None, Some(&web)).await.unwrap()),
        ["b"]
    );
    let eps = s.list(Kind::SpiderEndpoint, None, None).await.unwrap();
    assert_eq!(names(eps), ["ns1/d", "ns1/e", "ns2/e"]);
    let ns1 = s
        .list(Kind::SpiderEndpoint, Some("ns1"), None)
        .await
        .unwrap();
    assert_eq!(names(ns1), ["ns1/d", "ns1/e"]);
    let ns1 = s
        .list_current(
            Kind::SpiderEndpoint,
            Some("ns1"),
            Some(&LabelSelector::default()),
        )
        .await
        .unwrap();
    assert_eq!(names(ns1), ["ns1/d", "ns1/e"], "list_current");
    assert!(
        s.list(Kind::SpiderSubnet, None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Reads, updates and deletes of missing objects.
pub async fn missing_objects_are_not_found(s: &impl Store) {
    assert!(s.get(&key("nope")).await.unwrap().is_none());
    assert!(matches!(
        s.update(Kind::SpiderIPPool, pool("nope", json!({}))).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.update_status(Kind::SpiderIPPool, pool("nope", json!({})))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.delete(&key("nope"), None).await,
        Err(Error::NotFound(_))
    ));
    let nameless = json!({"metadata": {}, "spec": {}});
    assert!(matches!(
        s.create(Kind::SpiderIPPool, nameless).await,
        Err(Error::Malformed { .. })
    ));
}

/// The typed helpers store and read back a real object.
pub async fn typed_round_trip(s: &impl Store) {
    let mut p = SpiderIPPool::new(
        "typed",
        "10.0.0.0/24".parse().unwrap(),
        crate::ips!["10.0.0.5-10.0.0.9"],
    );
    // Written as the CRD's defaults would fill them in, so the spec reads back the same from
    // an API server too.
    p.spec.default = Some(false);
    p.spec.disable = Some(false);
    let stored = s.create_as(&p).await.unwrap();
    assert_eq!(stored.spec, p.spec);
    let got: SpiderIPPool = s.get_as(None, "typed").await.unwrap().unwrap();
    assert_eq!(got, stored);
    assert_eq!(
        s.list_as::<SpiderIPPool>(None).await.unwrap(),
        std::slice::from_ref(&stored)
    );
    assert_eq!(s.delete_as(&stored).await.unwrap(), Deleted::Gone);
}

/// A future that yields once, so concurrent tasks interleave between read and write.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Eight writers incrementing one counter by read-modify-write lose no increment.
pub async fn concurrent_writers_lose_no_update(s: &impl Store) {
    let mut p = pool("counter", json!({}));
    p["status"] = json!({"allocatedIPCount": 0});
    let created = s.create(Kind::SpiderIPPool, p).await.unwrap();
    let mut st = created;
    st["status"] = json!({"allocatedIPCount": 0});
    s.update_status(Kind::SpiderIPPool, st).await.unwrap();
    const WRITERS: i64 = 8;
    const EACH: i64 = 10;
    let conflicts = std::sync::atomic::AtomicUsize::new(0);
    let writer = || async {
        for _ in 0..EACH {
            loop {
                let mut cur = s.get(&key("counter")).await.unwrap().unwrap();
                YieldNow(false).await;
                let n = cur["status"]["allocatedIPCount"].as_i64().unwrap();
                cur["status"]["allocatedIPCount"] = json!(n + 1);
                match s.update_status(Kind::SpiderIPPool, cur).await {
                    Ok(_) => break,
                    Err(Error::Conflict(_)) => {
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => panic!("concurrent_writers_lose_no_update: {e}"),
                }
            }
        }
    };
    futures::future::join_all((0..WRITERS).map(|_| writer())).await;
    let end = s.get(&key("counter")).await.unwrap().unwrap();
    assert_eq!(
        end["status"]["allocatedIPCount"],
        WRITERS * EACH,
        "an increment was lost"
    );
    assert!(
        conflicts.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "interleaved writers never conflicted: versions are not checked"
    );
}

/// Watchers see creates, updates and deletes of their kind only.
pub async fn watch_reports_writes(s: &impl Store) {
    let mut w = s.watch(Kind::SpiderIPPool);
    let created = s
        .create(Kind::SpiderIPPool, pool("w", json!({})))
        .await
        .unwrap();
    s.create(
        Kind::SpiderSubnet,
        json!({"metadata": {"name": "other"}, "spec": {"subnet": "10.0.0.0/8"}}),
    )
    .await
    .unwrap();
    s.delete(&key("w"), None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), w.next())
            .await
            .expect("watch_reports_writes: no event within 5 s")
            .expect("watch stream ended");
        seen.push(ev);
    }
    assert_eq!(
        seen,
        [
            WatchEvent::Changed {
                key: key("w"),
                version: Some(version(&created))
            },
            WatchEvent::Changed {
                key: key("w"),
                version: None
            },
        ]
    );
}

/// `update_pool_records` changes exactly the records and counts it is given, under the pool's
/// version, and the pool reads back as if its status had been written whole.
pub async fn pool_records_change_under_the_pools_version(s: &impl Store) {
    use crate::pool::IpRecord;
    use crate::store::RecordsDelta;
    let rec = |pod: &str| IpRecord {
        pod: format!("default/{pod}"),
        pod_uid: pod.into(),
        container_id: Some(format!("c-{pod}")),
        interface: Some("eth0".into()),
        network: None,
        netns: None,
    };
    let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
    let p = SpiderIPPool::new(
        "r",
        "10.0.0.0/24".parse().unwrap(),
        crate::ips!["10.0.0.10-10.0.0.20"],
    );
    let created = s.create_as(&p).await.unwrap();
    let v1 = created.version().unwrap().to_string();
    let delta = RecordsDelta {
        set: vec![(ip("10.0.0.10"), rec("a")), (ip("10.0.0.11"), rec("b"))],
        remove: vec![],
        allocated_ip_count: 2,
        total_ip_count: 11,
        last_allocated_ip: Some(ip("10.0.0.11")),
    };
    let v2 = s.update_pool_records("r", &v1, &delta).await.unwrap();
    assert_ne!(v1, v2, "pool_records: version unchanged");
    let got: SpiderIPPool = s.get_as(None, "r").await.unwrap().unwrap();
    assert_eq!(got.version(), Some(v2.as_str()));
    assert_eq!(got.records().len(), 2);
    assert_eq!(got.records()[&ip("10.0.0.11")], rec("b"));
    let st = got.status.clone().unwrap();
    assert_eq!(
        (
            st.allocated_ip_count,
            st.total_ip_count,
            st.last_allocated_ip
        ),
        (Some(2), Some(11), Some(ip("10.0.0.11")))
    );
    assert_eq!(got.spec, created.spec, "pool_records: spec changed");
    assert!(
        matches!(
            s.update_pool_records("r", &v1, &delta).await,
            Err(Error::Conflict(_))
        ),
        "pool_records: a stale version was accepted"
    );
    let delta2 = RecordsDelta {
        set: vec![(ip("10.0.0.12"), rec("c"))],
        remove: vec![ip("10.0.0.10")],
        allocated_ip_count: 2,
        total_ip_count: 11,
        last_allocated_ip: Some(ip("10.0.0.12")),
    };
    let v3 = s.update_pool_records("r", &v2, &delta2).await.unwrap();
    let got: SpiderIPPool = s.get_as(None, "r").await.unwrap().unwrap();
    let ips: Vec<String> = got.records().keys().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["10.0.0.11", "10.0.0.12"]);
    assert_eq!(got.version(), Some(v3.as_str()));
    // A spec update keeps the records; a whole status write replaces them.
    let mut spec = got.clone();
    spec.spec.gateway = Some(ip("10.0.0.1"));
    let after_spec = s.update_as(&spec).await.unwrap();
    assert_eq!(
        after_spec.records().len(),
        2,
        "pool_records: a spec update lost records"
    );
    let listed: Vec<SpiderIPPool> = s.list_as(None).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .find(|p| p.name() == "r")
            .unwrap()
            .records()
            .len(),
        2
    );
    let mut whole = after_spec.clone();
    whole.set_records([(ip("10.0.0.20"), rec("z"))].into_iter().collect());
    let replaced = s.update_status_as(&whole).await.unwrap();
    assert_eq!(
        replaced.records().keys().collect::<Vec<_>>(),
        [&ip("10.0.0.20")]
    );
    let v = replaced.version().unwrap().to_string();
    let none = RecordsDelta {
        remove: vec![ip("10.0.0.20")],
        total_ip_count: 11,
        ..Default::default()
    };
    s.update_pool_records("r", &v, &none).await.unwrap();
    let empty: SpiderIPPool = s.get_as(None, "r").await.unwrap().unwrap();
    assert!(
        empty.status.unwrap().allocated_ips.is_none(),
        "pool_records: an empty map is not nil"
    );
    assert!(matches!(
        s.update_pool_records("nope", "1", &none).await,
        Err(Error::NotFound(_))
    ));
}

/// Deployments and StatefulSets round-trip like any object, on a store that writes them
/// (skipped, kind by kind, on one that only reads them: see [`Store::writes`]).
pub async fn workloads_are_stored_as_written(s: &impl Store) {
    for kind in [Kind::Deployment, Kind::StatefulSet] {
        if !s.writes(kind) {
            continue;
        }
        let app = json!({
            "apiVersion": "apps/v1",
            "kind": kind.name(),
            "metadata": {"name": "app", "namespace": "apps", "labels": {"app": "x"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}, "annotations": {"ipam.spidernet.io/subnet": "{}"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        });
        let created = s.create(kind, app).await.unwrap();
        let key = ObjectKey {
            kind,
            namespace: Some("apps".into()),
            name: "app".into(),
        };
        assert_eq!(
            s.get(&key).await.unwrap().as_ref(),
            Some(&created),
            "{kind}"
        );
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        let scaled = s.update(kind, scaled).await.unwrap();
        assert_eq!(scaled["spec"]["replicas"], 3, "{kind}: update lost");
        let listed = s.list(kind, Some("apps"), None).await.unwrap();
        assert_eq!(listed, std::slice::from_ref(&scaled), "{kind}: list");
        assert_eq!(
            s.delete(&key, Some(&version(&scaled))).await.unwrap(),
            Deleted::Gone,
            "{kind}"
        );
        assert!(s.get(&key).await.unwrap().is_none(), "{kind}: not deleted");
    }
}
