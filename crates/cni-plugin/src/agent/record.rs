//! The agent's record in the data dir it serves: `<data dir>/agent`, holding the socket path.
//!
//! "One owner per data dir" (DESIGN §5): while `berth agent` holds a data dir's store it
//! writes its socket path there, and every other user of the data dir (the `berth` CLI,
//! `berth-ipam` in embedded mode) goes through that socket instead of queueing for the lock.
//! The agent writes the record after its socket listens and removes it at a clean stop. A
//! record left by a killed agent is stale: its socket refuses connections (or is gone), and
//! readers ignore it — the kernel released the dead agent's lock anyway.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The record's file name inside the data dir.
pub const AGENT_RECORD: &str = "agent";

/// `<data dir>/agent`.
pub fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(AGENT_RECORD)
}

/// The socket path the record names, if there is a record.
pub fn read_record(data_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(record_path(data_dir)).ok()?;
    let path = text.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Whether something accepts connections on the unix socket `socket` (a blocking connect:
/// it waits while the listener's backlog is full).
pub fn socket_is_live(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Whether a listener is bound to the unix socket `socket`, without waiting: a full backlog
/// (`EAGAIN`) counts as live, a refused connection or a missing file as not.
pub async fn socket_is_bound(socket: &Path) -> bool {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    }
}

/// The socket of the agent serving `data_dir`, when the record names one with a listener
/// ([`socket_is_bound`]); `None` when there is no record or it is stale.
pub async fn live_agent(data_dir: &Path) -> Option<PathBuf> {
    let socket = read_record(data_dir)?;
    if socket_is_bound(&socket).await {
        Some(socket)
    } else {
        tracing::debug!(data_dir = %data_dir.display(), socket = %socket.display(), "ignoring a stale agent record");
        None
    }
}

/// Writes the record (atomically: a temporary file renamed over it).
pub(crate) fn write_record(data_dir: &Path, socket: &Path) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(".{AGENT_RECORD}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{}\n", socket.display()).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, record_path(data_dir))
}

/// Removes the record if it still names `socket` (another agent may have taken over).
pub(crate) fn remove_record(data_dir: &Path, socket: &Path) {
    if read_record(data_dir).as_deref() == Some(socket)
        && let Err(e) = std::fs::remove_file(record_path(data_dir))
    {
        tracing::warn!(data_dir = %data_dir.display(), error = %e, "cannot remove the agent record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_and_live_records() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_record(dir.path()), None);
        let socket = dir.path().join("s.sock");
        write_record(dir.path(), &socket).unwrap();
        assert_eq!(read_record(dir.path()), Some(socket.clone()));
        assert_eq!(live_agent(dir.path()).await, None, "nothing listens");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(live_agent(dir.path()).await, Some(socket.clone()));
        drop(listener);
        assert_eq!(live_agent(dir.path()).await, None, "refuses connections");
        remove_record(dir.path(), Path::new("/other.sock"));
        assert!(record_path(dir.path()).exists(), "not ours to remove");
        remove_record(dir.path(), &socket);
        assert!(!record_path(dir.path()).exists());
    }
}
