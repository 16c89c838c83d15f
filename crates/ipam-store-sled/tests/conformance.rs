//! The store conformance suite of ipam-core, each check on a fresh data dir.

use std::sync::atomic::{AtomicUsize, Ordering};

use ipam_store_sled::{FlushPolicy, OpenOptions, SledStore};

async fn run_all(options: OpenOptions) {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    ipam_core::store::conformance::run_all(|| {
        let dir = root
            .path()
            .join(n.fetch_add(1, Ordering::Relaxed).to_string());
        SledStore::open(dir, options.clone()).unwrap()
    })
    .await;
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    run_all(OpenOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_a_multi_thread_runtime() {
    run_all(OpenOptions::new()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_flushing_each_write() {
    run_all(OpenOptions::new().flush_policy(FlushPolicy::EachWrite)).await;
}

/// A journal limit of one byte: a checkpoint runs in the background after every write, so the
/// suite's reads and writes meet checkpoints at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_checkpointing_after_every_write() {
    run_all(OpenOptions::new().journal_limit(1)).await;
}
