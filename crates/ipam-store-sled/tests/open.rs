//! Opening a data dir: creation and mode, reopening, the schema record, group commit counts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ipam_core::store::{Store, TypedStore};
use ipam_core::{Kind, ObjectKey, SpiderIPPool, ips};
use ipam_store_sled::{FlushPolicy, OpenError, OpenOptions, SledStore, Stats};
use serde_json::json;

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, OpenOptions::new()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pool(name: &str) -> SpiderIPPool {
    SpiderIPPool::new(
        name,
        "10.6.0.0/16".parse().unwrap(),
        ips!["10.6.168.171-10.6.168.180"],
    )
}

/// Writes a raw sled database where Berth expects its store.
fn raw_sled(dir: &Path, tree: &str, key: &str, value: &str) {
    let db = sled::open(dir.join("db")).unwrap();
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn data_survives_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let a = store.create_as(&pool("a")).await.unwrap();
    store.create_as(&pool("b")).await.unwrap();
    let ep = json!({"metadata": {"name": "pod-0", "namespace": "ns"}});
    store.create(Kind::SpiderEndpoint, ep).await.unwrap();
    let mut status = store
        .get(&ObjectKey::cluster(Kind::SpiderIPPool, "b"))
        .await
        .unwrap()
        .unwrap();
    status["status"] = json!({"allocatedIPCount": 1});
    store
        .update_status(Kind::SpiderIPPool, status)
        .await
        .unwrap();
    store.delete_as(&a).await.unwrap();
    let pools = store.list(Kind::SpiderIPPool, None, None).await.unwrap();
    let endpoints = store.list(Kind::SpiderEndpoint, None, None).await.unwrap();
    drop(store);

    let store = open(tmp.path());
    assert_eq!(
        store.list(Kind::SpiderIPPool, None, None).await.unwrap(),
        pools
    );
    assert_eq!(
        store.list(Kind::SpiderEndpoint, None, None).await.unwrap(),
        endpoints
    );
    assert_eq!(pools[0]["status"]["allocatedIPCount"], 1);
    // Versions never repeat across a reopen.
    let old: Vec<_> = pools
        .iter()
        .chain(&endpoints)
        .map(|o| o["metadata"]["resourceVersion"].clone())
        .collect();
    let c = store.create_as(&pool("c")).await.unwrap();
    assert!(
        !old.contains(&json!(c.metadata.resource_version)),
        "version {:?} reused",
        c.metadata.resource_version
    );
}

#[tokio::test]
async fn a_new_data_dir_is_private_and_the_lock_file_names_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/berth");
    let store = open(&dir);
    assert_eq!(mode(&dir), 0o700);
    let lock = dir.join(ipam_store_sled::LOCK_FILE);
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        format!("{}\n", std::process::id())
    );
    assert_eq!(store.dir(), dir);
}

#[test]
fn an_existing_data_dir_keeps_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    drop(open(tmp.path()));
    assert_eq!(mode(tmp.path()), 0o750);
}

#[test]
fn a_file_in_place_of_the_data_dir_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data");
    std::fs::write(&file, "").unwrap();
    let err = SledStore::open(&file, OpenOptions::new()).unwrap_err();
    assert!(
        matches!(&err, OpenError::CreateDir { dir, .. } if *dir == file),
        "{err:?}"
    );
}

#[test]
fn quick_reopens_succeed() {
    // sled's threads may hold its own lock a moment after a drop; open retries through that.
    let tmp = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        drop(open(tmp.path()));
    }
}

#[test]
fn another_schema_version_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    raw_sled(tmp.path(), "__sled__default", "berth-schema", "3");
    let err = SledStore::open(tmp.path(), OpenOptions::new()).unwrap_err();
    assert!(
        matches!(&err, OpenError::SchemaMismatch { found, .. } if found == "3"),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        &tmp.path().display().to_string(),
        "schema version 3",
        "reads schema version 2",
        "run the Berth release that wrote it",
    ] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
}

#[test]
fn a_sled_database_berth_did_not_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    raw_sled(tmp.path(), "SpiderIPPool", "a", "{}");
    let err = SledStore::open(tmp.path(), OpenOptions::new()).unwrap_err();
    assert!(matches!(err, OpenError::NotABerthStore { .. }), "{err:?}");
    assert!(err.to_string().contains("move"), "{err}");
}

#[test]
fn an_empty_sled_database_becomes_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    drop(sled::open(tmp.path().join("db")).unwrap());
    drop(open(tmp.path()));
    drop(open(tmp.path()));
}

#[test]
fn open_errors_become_backend_errors() {
    let tmp = tempfile::tempdir().unwrap();
    raw_sled(tmp.path(), "__sled__default", "berth-schema", "3");
    let err: ipam_core::Error = SledStore::open(tmp.path(), OpenOptions::new())
        .unwrap_err()
        .into();
    let ipam_core::Error::Backend { source, .. } = err else {
        panic!("not a backend error: {err:?}");
    };
    assert!(source.downcast_ref::<OpenError>().is_some());
}

#[tokio::test]
async fn concurrent_writers_share_flushes() {
    let tmp = tempfile::tempdir().unwrap();
    for (policy, flushes) in [(FlushPolicy::Group, 1), (FlushPolicy::EachWrite, 64)] {
        let store = SledStore::open(
            tmp.path().join(format!("{policy:?}")),
            OpenOptions::new().flush_policy(policy),
        )
        .unwrap();
        let pools: Vec<_> = (0..64).map(|i| pool(&format!("p{i}"))).collect();
        futures::future::try_join_all(pools.iter().map(|p| store.create_as(p)))
            .await
            .unwrap();
        // On one thread, the first writer to flush lets the others run once before it syncs:
        // they all commit meanwhile, and its one flush covers all 64.
        assert_eq!(
            store.stats(),
            Stats {
                writes: 64,
                flushes
            },
            "{policy:?}"
        );
    }
}

#[tokio::test]
async fn a_document_larger_than_a_log_segment_survives_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut big = serde_json::to_value(pool("big")).unwrap();
    big["metadata"]["annotations"] = json!({"note": "x".repeat(300 << 10)});
    let stored = store.create(Kind::SpiderIPPool, big).await.unwrap();
    let key = ObjectKey::cluster(Kind::SpiderIPPool, "big");
    // Durable in the journal first.
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.get(&key).await.unwrap().unwrap(), stored);
    // Then in sled, which keeps such a value in a file of its own, which the checkpoint's sync
    // must sync too.
    store.checkpoint().unwrap();
    let blobs = std::fs::read_dir(tmp.path().join("db/blobs"))
        .unwrap()
        .count();
    assert!(
        blobs > 0,
        "the value did not go to a blob file; this test covers nothing"
    );
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.get(&key).await.unwrap().unwrap(), stored);
}

#[tokio::test]
async fn deferred_writes_share_one_sync_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(tmp.path().join("d"), OpenOptions::new()).unwrap();
    let before = store.stats();
    let created = ipam_core::store::deferring_durability(&store, async {
        let mut out = Vec::new();
        for i in 0..5 {
            out.push(store.create_as(&pool(&format!("d{i}"))).await?);
        }
        // Inside the scope no write waited for the disk.
        assert_eq!(store.stats().flushes, before.flushes);
        Ok::<_, ipam_core::Error>(out)
    })
    .await
    .unwrap();
    assert_eq!(created.len(), 5);
    let after = store.stats();
    assert_eq!(
        (after.writes - before.writes, after.flushes - before.flushes),
        (5, 1)
    );
    // A sync with nothing new to write does not touch the disk.
    store.sync().await.unwrap();
    assert_eq!(store.stats().flushes, after.flushes);
}

#[tokio::test]
async fn a_listing_gives_each_pool_exactly_its_own_records() {
    use ipam_core::store::RecordsDelta;
    use ipam_core::{IpRecord, LabelSelector};
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    // Names that sort next to each other and to their records' keys (`name 0x00 ip`).
    let names = ["a", "a-b", "a.b", "ab", "b"];
    for (i, name) in names.iter().enumerate() {
        let mut p = pool(name);
        if i % 2 == 0 {
            p.metadata.labels.insert("even".into(), "yes".into());
        }
        let created = store.create_as(&p).await.unwrap();
        let set = (0..=i)
            .map(|k| {
                let ip = format!("10.6.168.{}", 171 + k).parse().unwrap();
                let record = IpRecord {
                    pod: format!("ns/{name}-{k}"),
                    pod_uid: format!("uid-{name}-{k}"),
                    container_id: None,
                    interface: None,
                    network: None,
                    netns: None,
                };
                (ip, record)
            })
            .collect::<Vec<_>>();
        let delta = RecordsDelta {
            allocated_ip_count: set.len() as i64,
            total_ip_count: 10,
            set,
            ..Default::default()
        };
        store
            .update_pool_records(
                name,
                created.metadata.resource_version.as_deref().unwrap(),
                &delta,
            )
            .await
            .unwrap();
    }
    let listed: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    let got: Vec<(String, Vec<String>)> = listed
        .iter()
        .map(|p| {
            let pods = p.iter_records().map(|(_, r)| r.pod.clone()).collect();
            (p.metadata.name.clone(), pods)
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.to_string(),
                (0..=i).map(|k| format!("ns/{n}-{k}")).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let even = LabelSelector::eq([("even", "yes")]);
    let listed: Vec<SpiderIPPool> = store.list_as(Some(&even)).await.unwrap();
    let got: Vec<(&str, usize)> = listed
        .iter()
        .map(|p| (p.metadata.name.as_str(), p.allocated_count()))
        .collect();
    assert_eq!(got, [("a", 1), ("a.b", 3), ("b", 5)]);
}

#[tokio::test]
async fn a_snapshot_half_written_by_a_killed_process_does_not_stop_the_store_opening() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        store.create_as(&pool("kept")).await.unwrap();
    }
    // What sled leaves when the process dies while it writes a snapshot during open: a
    // `.generating` file whose name sorts after every finished snapshot.
    let partial = tmp.path().join("db/snap.FFFFFFFFFFFFFFF0.generating");
    std::fs::write(&partial, b"\x01\x02\x03").unwrap();
    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap_or_else(|e| {
        panic!(
            "the store does not open: {e} ({:?})",
            std::error::Error::source(&e)
        )
    });
    let kept: Option<SpiderIPPool> = store.get_as(None, "kept").await.unwrap();
    assert!(kept.is_some(), "what was written before is still there");
    assert!(!partial.exists(), "the partial snapshot is gone");
    store.create_as(&pool("after")).await.unwrap();
}

/// The agent's case: each request a task of its own on one thread. The first writer to flush
/// lets the others run before it syncs, so the writes of the tasks under way share its sync
/// (not one sync each, which a sync run at once would make).
#[tokio::test]
async fn writers_in_tasks_of_one_thread_share_flushes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(tmp.path(), OpenOptions::new()).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_as(&pool(&format!("p{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 64);
    assert!(
        stats.flushes <= 2,
        "64 tasks' writes took {} flushes",
        stats.flushes
    );
}
