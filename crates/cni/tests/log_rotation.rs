//! Many plugin processes logging to one file at once, with a tiny size bound: every line
//! lands whole, once, in order per process; no generation is rotated twice; the backups never
//! outnumber the count; every file keeps within the bound.
//!
//! The writers are this test binary run again with `--exact writer_child` and
//! `BERTH_TEST_LOG_WRITER` set to `<log path>|<writer id>|<max bytes>|<max backups>`: each
//! installs the subscriber a plugin installs ([`init_file_logging_with`]) and logs
//! [`LINES`] INFO records, then exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use berth_cni::logging::rotating::DAY;
use berth_cni::logging::{LogTarget, Rotation, init_file_logging_with, level_filter};

const WRITER_ENV: &str = "BERTH_TEST_LOG_WRITER";
const WRITERS: usize = 12;
const LINES: usize = 150;
const MAX_BYTES: u64 = 4096;
/// Every record ends so; a torn line would not.
const END: &str = r#"end=".""#;

/// The writer's side; does nothing in a normal run.
#[test]
fn writer_child() {
    let Some(spec) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let [path, id, max_bytes, max_backups] = spec.split('|').collect::<Vec<_>>()[..] else {
        panic!("bad {WRITER_ENV}: {spec}");
    };
    let rotation = Rotation {
        max_bytes: max_bytes.parse().unwrap(),
        max_backups: max_backups.parse().unwrap(),
        max_age: DAY,
    };
    let target = init_file_logging_with(Path::new(path), level_filter(Some("info")), rotation);
    assert_eq!(target, LogTarget::File(path.into()));
    for line in 0..LINES {
        // Lines of different lengths, so that rotations fall at different places.
        let pad = "x".repeat((line * 7 + id.len()) % 40);
        tracing::info!(writer = id, line, pad, end = ".", "record");
    }
}

struct Writers(Vec<Child>);

impl Writers {
    fn start(path: &Path, max_backups: u64) -> Writers {
        Writers(
            (0..WRITERS)
                .map(|id| {
                    Command::new(std::env::current_exe().unwrap())
                        .args(["--exact", "writer_child", "--test-threads=1"])
                        .env(
                            WRITER_ENV,
                            format!("{}|w{id}|{MAX_BYTES}|{max_backups}", path.display()),
                        )
                        .stdout(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }

    fn wait(mut self) {
        for child in &mut self.0 {
            assert!(child.wait().unwrap().success(), "a writer failed");
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The backups of `log` in `dir`, oldest first: `(n, path)` for `log.<n>`.
fn backups(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("x.log.")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    found
}

/// Runs the writers against `dir/x.log` while counting the backups as they come and go;
/// the most seen at once, and the files oldest first (backups, then the log).
fn run(dir: &Path, max_backups: u64) -> (usize, Vec<(PathBuf, String)>) {
    let path = dir.join("x.log");
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (done, most, dir) = (done.clone(), most.clone(), dir.to_path_buf());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(backups(&dir).len(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let writers = Writers::start(&path, max_backups);
    writers.wait();
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let mut files: Vec<PathBuf> = backups(dir).into_iter().map(|(_, p)| p).collect();
    files.push(path);
    let files = files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    (most.load(Ordering::Relaxed).max(backups(dir).len()), files)
}

/// `(writer, line)` of a whole record; panics on anything else.
fn record(line: &str) -> (String, usize) {
    assert!(
        line.contains(" INFO ") && line.ends_with(END),
        "torn or foreign line: {line:?}"
    );
    let field = |name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("writer=").to_owned(), field("line=").parse().unwrap())
}

/// Checks the shape of every file: within the bound, and each backup full enough that the
/// next record would not have fitted (a generation rotated twice would leave a short one).
fn check_sizes(files: &[(PathBuf, String)]) {
    let longest = files
        .iter()
        .flat_map(|(_, t)| t.lines())
        .map(|l| l.len() as u64 + 1)
        .max()
        .unwrap();
    let (log, backups) = files.split_last().unwrap();
    for (path, text) in files {
        let size = text.len() as u64;
        assert!(size <= MAX_BYTES, "{}: {size} bytes", path.display());
    }
    for (path, text) in backups {
        let size = text.len() as u64;
        assert!(
            size + longest > MAX_BYTES,
            "{} rotated at {size} bytes",
            path.display()
        );
    }
    assert!(!log.1.is_empty());
}

#[test]
fn concurrent_writers_lose_no_line_and_keep_every_file_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    // Enough backups for everything written: each line must be found exactly once.
    let (_, files) = run(dir.path(), 1000);
    check_sizes(&files);
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for (path, text) in &files {
        for line in text.lines() {
            let (writer, n) = record(line);
            let expected = next.entry(writer.clone()).or_default();
            assert_eq!(
                n,
                *expected,
                "{writer}'s lines out of order or twice in {}",
                path.display()
            );
            *expected += 1;
        }
    }
    assert_eq!(next.len(), WRITERS);
    assert!(next.values().all(|n| *n == LINES), "{next:?}");
    assert!(files.len() > 10, "only {} files: no rotation", files.len());
}

#[test]
fn concurrent_writers_never_keep_more_than_max_backups() {
    let dir = tempfile::tempdir().unwrap();
    let (most, files) = run(dir.path(), 3);
    assert!(most <= 3, "{most} backups at once");
    assert_eq!(files.len(), 4);
    check_sizes(&files);
    // What is kept is the newest, whole, once, in order per writer.
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for (_, text) in &files {
        for line in text.lines() {
            let (writer, n) = record(line);
            if let Some(before) = last.insert(writer.clone(), n) {
                assert!(n > before, "{writer}: line {n} after {before}");
            }
        }
    }
    assert!(last.values().any(|n| *n == LINES - 1), "{last:?}");
}
