//! One store per data dir: a second open waits for the first to close, across threads and
//! processes, and gives up after its timeout naming the holder.
//!
//! The other process is this test binary run again with `--exact lock_holder_child` and
//! `BERTH_TEST_LOCK_HOLDER_DIR` set: it opens the store, writes an object, prints
//! `HOLDER_READY`, and keeps the store open until its stdin closes.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use ipam_core::store::TypedStore;
use ipam_core::{SpiderIPPool, ips};
use ipam_store_sled::{OpenError, OpenOptions, SledStore};

const HOLDER_ENV: &str = "BERTH_TEST_LOCK_HOLDER_DIR";
const READY: &str = "HOLDER_READY";
/// How long a waiting open is given to show that it waits: it must not have returned by then.
const STILL_WAITING: Duration = Duration::from_millis(300);
/// How long a waiting open may take once the holder is gone.
const HANDOVER: Duration = Duration::from_secs(20);

fn pool(name: &str) -> SpiderIPPool {
    SpiderIPPool::new(
        name,
        "10.6.0.0/16".parse().unwrap(),
        ips!["10.6.168.171-10.6.168.180"],
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Opens `dir` on another thread; the receiver gets the result.
fn open_in_background(dir: &Path) -> mpsc::Receiver<Result<SledStore, OpenError>> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    thread::spawn(move || {
        // The receiver is gone only if the test already failed.
        let _ = tx.send(SledStore::open(dir, OpenOptions::new()));
    });
    rx
}

/// The child's side of `a_second_process_waits_for_the_lock`; does nothing in a normal run.
#[test]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let store = SledStore::open(&dir, OpenOptions::new()).unwrap();
    block_on(store.create_as(&pool("from-child"))).unwrap();
    println!("{READY}");
    std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
    drop(store);
}

/// The holder process, killed if the test fails before it exits.
struct Holder {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(dir: &Path) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the holder exited before it held the lock");
        }
        Holder { child, stdout }
    }

    /// Closes the holder's stdin: it drops its store and exits.
    fn release(&mut self) {
        drop(self.child.stdin.take());
        // Read on, so the child never writes to a closed pipe.
        self.stdout.read_to_end(&mut Vec::new()).unwrap();
        assert!(self.child.wait().unwrap().success(), "the holder failed");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

#[test]
fn a_second_process_times_out_naming_the_holder_then_waits_for_it() {
    let (_tmp, dir) = data_dir();
    let mut holder = Holder::start(&dir);

    let timeout = Duration::from_millis(100);
    let err = SledStore::open(&dir, OpenOptions::new().lock_timeout(timeout)).unwrap_err();
    let OpenError::Locked {
        holder: pid,
        waited,
        ..
    } = &err
    else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(*pid, Some(holder.child.id()));
    assert!(*waited >= timeout, "gave up after {waited:?}");
    let msg = err.to_string();
    let expected = format!(
        "{} is in use by another process (pid {})",
        dir.display(),
        holder.child.id()
    );
    assert!(msg.contains(&expected), "{msg:?} lacks {expected:?}");

    let opened = open_in_background(&dir);
    assert!(
        matches!(
            opened.recv_timeout(STILL_WAITING),
            Err(RecvTimeoutError::Timeout)
        ),
        "open returned while another process held the data dir"
    );
    holder.release();
    let store = opened
        .recv_timeout(HANDOVER)
        .expect("open still waiting after the holder exited")
        .unwrap();
    let got: Option<SpiderIPPool> = block_on(store.get_as(None, "from-child")).unwrap();
    assert!(got.is_some(), "the holder's write is missing");
}

#[test]
fn a_second_open_in_this_process_waits_for_the_first_to_be_dropped() {
    let (_tmp, dir) = data_dir();
    let first = SledStore::open(&dir, OpenOptions::new()).unwrap();
    block_on(first.create_as(&pool("from-first"))).unwrap();
    let opened = open_in_background(&dir);
    assert!(
        matches!(
            opened.recv_timeout(STILL_WAITING),
            Err(RecvTimeoutError::Timeout)
        ),
        "open returned while this process held the data dir"
    );
    drop(first);
    let second = opened
        .recv_timeout(HANDOVER)
        .expect("open still waiting after the drop")
        .unwrap();
    let got: Option<SpiderIPPool> = block_on(second.get_as(None, "from-first")).unwrap();
    assert!(got.is_some());
}

#[test]
fn a_zero_timeout_tries_once() {
    let (_tmp, dir) = data_dir();
    let _first = SledStore::open(&dir, OpenOptions::new()).unwrap();
    let err = SledStore::open(&dir, OpenOptions::new().lock_timeout(Duration::ZERO)).unwrap_err();
    let OpenError::Locked { holder, .. } = err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(holder, Some(std::process::id()));
}
