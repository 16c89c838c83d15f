//! The data dir's lock file: one store per data dir at a time, across processes.
//!
//! sled takes a non-blocking `flock` on its own file and fails at once when another process
//! has it, with the cause hidden in an `io::ErrorKind::Other` message. CNI ADDs and DELs run as
//! concurrent processes, so they must queue instead: every open first takes an exclusive
//! `flock` on `<data dir>/lock` (std's [`File::try_lock`]), polling until a timeout, and holds
//! it for the life of the store. The holder writes its pid into the file so that the next
//! process that times out can say who holds it. `flock` belongs to the open file, so a second
//! open inside the same process queues the same way; the kernel drops the lock when the
//! process dies, so a crashed holder never leaves the dir locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::OpenError;

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "lock";

/// First pause between two attempts; each further pause is this much longer, up to
/// [`MAX_PAUSE`]. Short, because a CNI call holds the lock for milliseconds.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// The lock on a data dir, released when dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the lock on `dir`, waiting up to `timeout` for another holder to let go.
pub(crate) fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock, OpenError> {
    let path = dir.join(LOCK_FILE);
    let lock_error = |source| OpenError::LockFile {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(lock_error)?;
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(OpenError::Locked {
                        dir: dir.to_path_buf(),
                        holder: holder_pid(&file),
                        waited,
                    });
                }
                if pause == FIRST_PAUSE {
                    tracing::info!(
                        lock = %path.display(),
                        holder = ?holder_pid(&file),
                        "data dir in use by another process; waiting for it"
                    );
                }
                thread::sleep(pause.min(timeout - waited));
                pause = (pause + FIRST_PAUSE).min(MAX_PAUSE);
            }
            Err(TryLockError::Error(source)) => return Err(lock_error(source)),
        }
    }
    record_pid(&file).map_err(lock_error)?;
    Ok(DirLock { _file: file })
}

fn record_pid(file: &File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
}

/// The pid the current holder recorded, if it has written one yet.
fn holder_pid(file: &File) -> Option<u32> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}
