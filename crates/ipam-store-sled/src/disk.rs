//! What a checkpoint's sync of sled must do so that what it moved there survives a power loss,
//! not only a process crash (before it returns, the journal files it covered stay).
//!
//! sled 0.34.7's `Db::flush` writes its log buffer and, on Linux, calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on that range (`pagecache/iobuf.rs`,
//! `write_to_log`) instead of `fsync`. That waits for the page cache writeback but commits no
//! metadata (the log file's size grows as segments are appended) and does not flush the
//! disk's write cache: after a power loss or a kernel crash the write may be gone. The only
//! `fsync` of the log is in sled's periodic flusher (`flush_every_ms`), which we turn off.
//! sled also writes values too large for its log segment (over about 128 KiB of a tree node)
//! as separate files under `db/blobs/` without syncing them or the directory.
//!
//! So [`Disk::sync`] runs sled's flush, then `fdatasync` on the log file (through our own
//! descriptor: `fsync` acts on the file, whichever descriptor wrote it), then syncs the blob
//! files it has not synced yet and their directory. `strace` of the `perf` example shows the
//! difference: without this, no `fsync`/`fdatasync` at all per write.
//!
//! One window remains that only sled could close: sled may write a log buffer on its own once
//! it is full, so a log record can reach the disk before the blob it points to is synced. No
//! write is lost in that window (the journal still holds it), but sled may find the blob
//! missing when it recovers.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The log file inside sled's directory.
const LOG_FILE: &str = "db";
/// sled's directory of large values.
const BLOB_DIR: &str = "blobs";
/// sled's storage parameters file.
const CONF_FILE: &str = "conf";

/// The files of one open sled database, for syncing.
#[derive(Debug)]
pub(crate) struct Disk {
    db: sled::Db,
    log: File,
    blob_dir: PathBuf,
    /// Blob files synced already (sled never rewrites one: it creates each with `create_new`).
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
}

impl Disk {
    /// Opens the files of the sled database `db` in `db_dir`, and syncs the whole layout once:
    /// sled writes its `conf` file and creates its directories without syncing them, and this
    /// may be the first open of the data dir.
    pub(crate) fn open(db: sled::Db, data_dir: &Path, db_dir: &Path) -> io::Result<Disk> {
        let log = File::open(db_dir.join(LOG_FILE))?;
        let disk = Disk {
            db,
            log,
            blob_dir: db_dir.join(BLOB_DIR),
            synced_blobs: Mutex::new(HashSet::new()),
        };
        disk.sync()?;
        File::open(db_dir.join(CONF_FILE))?.sync_data()?;
        for dir in [db_dir, data_dir] {
            File::open(dir)?.sync_all()?;
        }
        Ok(disk)
    }

    /// Makes every write that sled accepted before this call durable. Blocks on the disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.log.sync_data()?;
        self.sync_blobs()
    }

    /// Syncs blob files not synced yet, then their directory if there were any.
    fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in std::fs::read_dir(&self.blob_dir)? {
            let name = entry?.file_name();
            if !synced.contains(&name) {
                match File::open(self.blob_dir.join(&name)) {
                    Ok(f) => f.sync_data()?,
                    // sled removed it meanwhile (its blob GC).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blob_dir)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}
