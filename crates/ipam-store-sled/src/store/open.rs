//! Opening a data dir: its directory, its lock, sled and its recovery, the schema check, the
//! journal's replay.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipam_core::Kind;
use tokio::sync::broadcast;

use super::SledStore;
use super::checkpoint::Shared;
use crate::commit::{FlushPolicy, GroupCommit};
use crate::disk::Disk;
use crate::error::OpenError;
use crate::journal::Journal;
use crate::layout::{self, DB_DIR};
use crate::lock;
use crate::overlay::Overlay;

/// How [`SledStore::open`] opens a data dir. Build it like `std::fs::OpenOptions`.
///
/// ```
/// use std::time::Duration;
/// use ipam_store_sled::OpenOptions;
///
/// let options = OpenOptions::new().lock_timeout(Duration::from_secs(5));
/// assert_eq!(options.get_lock_timeout(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct OpenOptions {
    lock_timeout: Duration,
    flush_policy: FlushPolicy,
    journal_limit: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_timeout: OpenOptions::DEFAULT_LOCK_TIMEOUT,
            flush_policy: FlushPolicy::Group,
            journal_limit: OpenOptions::DEFAULT_JOURNAL_LIMIT,
        }
    }
}

impl OpenOptions {
    /// The default lock timeout: 30 s, well under the time a container runtime gives one CNI
    /// call, well over the time one call holds the store.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

    /// The default journal limit: 1 MiB, about 400 allocations (a pool write and an endpoint
    /// write each). Every open replays what the journal holds (2 ms for 1 MiB here), which an
    /// embedded-mode plugin pays on every call; a checkpoint costs a sled sync.
    pub const DEFAULT_JOURNAL_LIMIT: u64 = 1 << 20;

    /// The defaults: wait up to [`Self::DEFAULT_LOCK_TIMEOUT`] for the lock, group commit, a
    /// checkpoint every [`Self::DEFAULT_JOURNAL_LIMIT`] bytes of journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long `open` waits for another holder of the data dir's lock before it fails with
    /// [`OpenError::Locked`]. Zero tries once.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How writes are flushed (group commit by default).
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.flush_policy = policy;
        self
    }

    /// How many bytes the journal may hold before a checkpoint moves them into sled (in the
    /// background; at open, before the store is returned). Writes cost the same either way;
    /// a smaller limit means less to replay after a crash and less memory, more sled writes.
    pub fn journal_limit(mut self, bytes: u64) -> Self {
        self.journal_limit = bytes;
        self
    }

    /// The journal limit set.
    pub fn get_journal_limit(&self) -> u64 {
        self.journal_limit
    }

    /// The lock timeout set.
    pub fn get_lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The flush policy set.
    pub fn get_flush_policy(&self) -> FlushPolicy {
        self.flush_policy
    }
}

impl SledStore {
    /// Opens the store in `dir`, creating the dir (mode 0700, parents too) and an empty store if
    /// missing. Waits up to the options' lock timeout for another process (or another store of
    /// this process) to release the dir.
    ///
    /// This blocks the calling thread (on the lock and on sled's recovery); from async code, call
    /// it through `tokio::task::spawn_blocking` if that matters.
    pub fn open(dir: impl AsRef<Path>, options: OpenOptions) -> Result<SledStore, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        create_data_dir(&dir).map_err(|source| OpenError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        let lock = lock::acquire(&dir, options.lock_timeout)?;
        let db_dir = dir.join(DB_DIR);
        let db = layout::open_db(&db_dir)?;
        layout::check_schema(&db, &dir)?;
        let trees = Kind::ALL
            .iter()
            .map(|&kind| db.open_tree(layout::tree_name(kind)))
            .collect::<sled::Result<Vec<_>>>()
            .map_err(|source| OpenError::Sled {
                path: db_dir.clone(),
                source,
            })?;
        let disk = Disk::open(db.clone(), &dir, &db_dir).map_err(|source| OpenError::Sync {
            path: db_dir.clone(),
            source,
        })?;
        let (journal, records) = Journal::open(&dir)?;
        let mut overlay = Overlay::new();
        let mut seq = 0;
        for record in &records {
            overlay.apply(record.seq, &record.changes);
            seq = seq.max(record.seq);
        }
        let journal = Arc::new(journal);
        let shared = Arc::new(Shared {
            order: Mutex::new(()),
            journal: Arc::clone(&journal),
            overlay: Mutex::new(overlay),
            trees,
            disk,
            checkpointing: AtomicBool::new(false),
        });
        if journal.size() >= options.journal_limit {
            shared.checkpoint().map_err(|source| OpenError::Sync {
                path: db_dir,
                source,
            })?;
        }
        Ok(SledStore {
            shared,
            db,
            commit: GroupCommit::new(journal, options.flush_policy),
            seq: AtomicU64::new(seq),
            journal_limit: options.journal_limit,
            checkpointer: Mutex::new(None),
            events: broadcast::channel(1024).0,
            dir,
            _lock: lock,
        })
    }
}

/// Creates `dir` and its missing parents with mode 0700, and syncs the directories that got a
/// new entry, so that a store created just before a power loss is still found. An existing dir
/// is left as it is.
fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    // The ancestors of a relative path end with "", the working directory.
    let ancestors = || {
        dir.ancestors().map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
    };
    let existing = ancestors().find(|a| a.is_dir());
    if existing == Some(dir) {
        return Ok(());
    }
    // create_dir_all would say "File exists", which reads as if all were well.
    if dir.exists() {
        return Err(std::io::ErrorKind::NotADirectory.into());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for parent in ancestors().skip(1) {
        std::fs::File::open(parent)?.sync_all()?;
        if Some(parent) == existing {
            break;
        }
    }
    Ok(())
}
