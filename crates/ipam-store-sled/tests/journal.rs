//! The journal and its checkpoints, seen from outside: where a write lives before and after a
//! checkpoint, checkpoints racing writes, and a store of schema version 1 opening.

use std::path::Path;
use std::sync::Arc;

use ipam_core::store::{Store, TypedStore};
use ipam_core::{Kind, ObjectKey, SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};
use serde_json::{Value, json};

fn pool(name: &str) -> SpiderIPPool {
    SpiderIPPool::new(
        name,
        "10.6.0.0/16".parse().unwrap(),
        ips!["10.6.168.171-10.6.168.180"],
    )
}

/// The value of `key` in sled's tree `tree`, read with sled itself (the store must be closed).
fn in_sled(dir: &Path, tree: &str, key: &str) -> Option<Value> {
    let db = sled::open(dir.join("db")).unwrap();
    let value = db.open_tree(tree).unwrap().get(key).unwrap();
    value.map(|v| serde_json::from_slice(&v).unwrap())
}

/// The sizes of the journal files, oldest first.
fn journal_files(dir: &Path) -> Vec<u64> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files.into_iter().map(|(_, len)| len).collect()
}

#[tokio::test]
async fn a_write_lives_in_the_journal_until_a_checkpoint_moves_it_into_sled() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    let created = store.create_as(&pool("a")).await.unwrap();
    drop(store);
    assert_eq!(in_sled(tmp.path(), "SpiderIPPool", "a"), None);
    assert!(journal_files(tmp.path()).iter().sum::<u64>() > 0);

    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    let got: SpiderIPPool = store.get_as(None, "a").await.unwrap().unwrap();
    assert_eq!(got, created, "replayed from the journal");
    store.checkpoint().unwrap();
    drop(store);
    let doc = in_sled(tmp.path(), "SpiderIPPool", "a").expect("in sled after the checkpoint");
    assert_eq!(doc["metadata"]["name"], "a");
    assert_eq!(
        journal_files(tmp.path()),
        [0],
        "one empty journal file left"
    );

    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    let got: SpiderIPPool = store.get_as(None, "a").await.unwrap().unwrap();
    assert_eq!(got, created);
}

#[tokio::test]
async fn a_journal_over_the_limit_is_moved_into_sled_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    store.create_as(&pool("a")).await.unwrap();
    drop(store);
    let store = SledStore::open(tmp.path(), OpenOptions::new().journal_limit(1)).unwrap();
    drop(store);
    assert!(in_sled(tmp.path(), "SpiderIPPool", "a").is_some());
    assert_eq!(journal_files(tmp.path()), [0]);
}

/// Eight writers, each creating and then updating its own endpoints, while a checkpoint runs
/// after every write: every object ends with its last write, before and after a reopen, and
/// every write's version is above the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_racing_writes_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let options = OpenOptions::new().journal_limit(1);
    let store = Arc::new(SledStore::open(tmp.path(), options.clone()).unwrap());
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let name = format!("ep-{writer}-{i}");
                let obj =
                    json!({"metadata": {"name": name, "namespace": "ns"}, "status": {"n": 0}});
                let mut obj = store.create(Kind::SpiderEndpoint, obj).await.unwrap();
                for n in 1..=3 {
                    let before: u64 = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    obj["status"]["n"] = json!(n);
                    obj = store.update(Kind::SpiderEndpoint, obj).await.unwrap();
                    let after: u64 = obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(after > before);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let check = |store: Arc<SledStore>| async move {
        let all = store.list(Kind::SpiderEndpoint, None, None).await.unwrap();
        assert_eq!(all.len(), 200);
        assert!(all.iter().all(|o| o["status"]["n"] == 3), "a lost update");
        let key = ObjectKey::namespaced(Kind::SpiderEndpoint, "ns", "ep-7-24");
        assert_eq!(store.get(&key).await.unwrap().unwrap()["status"]["n"], 3);
    };
    check(Arc::clone(&store)).await;
    drop(store);
    check(Arc::new(SledStore::open(tmp.path(), options).unwrap())).await;
}

#[tokio::test]
async fn a_store_of_schema_version_1_opens_and_is_marked_version_2() {
    let tmp = tempfile::tempdir().unwrap();
    {
        // What a release of schema 1 leaves: everything in sled, no journal.
        let db = sled::open(tmp.path().join("db")).unwrap();
        db.insert("berth-schema", "1").unwrap();
        let mut doc = serde_json::to_value(pool("old")).unwrap();
        doc["metadata"]["resourceVersion"] = json!("7");
        db.open_tree("SpiderIPPool")
            .unwrap()
            .insert("old", serde_json::to_vec(&doc).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    let got: SpiderIPPool = store.get_as(None, "old").await.unwrap().unwrap();
    assert_eq!(got.metadata.resource_version.as_deref(), Some("7"));
    drop(store);
    let db = sled::open(tmp.path().join("db")).unwrap();
    assert_eq!(db.get("berth-schema").unwrap().unwrap(), "2");
}
