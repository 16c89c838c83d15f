//! Network namespaces, entered the only safe way: on a throw-away OS thread.
//!
//! `setns(CLONE_NEWNET)` moves the calling *thread*, and a netlink socket belongs for its
//! whole life to the namespace of the thread that created it. So [`Netns::run`] spawns a
//! scoped thread, moves it into the namespace, runs the closure and lets the thread exit
//! — the namespace switch dies with it; no tokio worker ever changes namespace (the bug of
//! kata-containers #5728). [`Netns::netlink`] uses it to create an rtnetlink socket inside
//! the namespace and hands back a handle usable from any task.
//!
//! This module is the crate's only `setns`; `nix` wraps the system call, so the crate needs
//! no `unsafe` at all.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::Error;

/// The namespace file of the calling process.
pub const SELF_NETNS: &str = "/proc/self/ns/net";

/// An open network namespace file (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`).
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens the namespace at `path` (kept open, so it stays valid while in use).
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, Error> {
        let path = path.as_ref().to_path_buf();
        match File::open(&path) {
            Ok(file) => Ok(Netns { path, file }),
            Err(source) => Err(Error::Netns { path, source }),
        }
    }

    /// The namespace this process runs in (the node, for a CNI plugin).
    pub fn current() -> Result<Netns, Error> {
        Netns::open(SELF_NETNS)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, e.g. for `IFLA_NET_NS_FD` (creating a link directly in it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The raw fd of [`Netns::fd`], as rtnetlink's `setns_by_fd` takes it.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Whether the calling thread is already in this namespace (same nsfs inode).
    pub fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (
            self.file.metadata(),
            std::fs::metadata("/proc/thread-self/ns/net"),
        ) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Runs `f` on a new OS thread that has joined this namespace, and waits for it. The
    /// thread exits afterwards, and its namespace with it; the caller's thread never moves.
    /// A panic in `f` is resumed in the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    setns(&self.file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
                    Ok(f())
                })
                .map_err(|source| Error::Io {
                    context: "spawning the namespace thread".into(),
                    source,
                })?;
            match thread.join() {
                Ok(result) => result.map_err(|source| Error::Netns {
                    path: self.path.clone(),
                    source,
                }),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// An rtnetlink handle whose socket was created inside this namespace. Its connection
    /// task is spawned on the current tokio runtime (so call this from inside one).
    pub fn netlink(&self) -> Result<rtnetlink::Handle, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::Io {
            context: "opening a netlink socket needs a tokio runtime".into(),
            source: std::io::Error::other(e),
        })?;
        let rt = runtime.clone();
        let open = move || {
            // The socket registers with the runtime's reactor: enter it on this thread.
            let _entered = rt.enter();
            rtnetlink::new_connection().map(|(connection, handle, _)| (connection, handle))
        };
        // Already there (the node, for a plugin): no thread, and no CAP_SYS_ADMIN needed.
        let opened = if self.is_current() {
            open()
        } else {
            self.run(open)?
        };
        let (connection, handle) = opened.map_err(|source| Error::Io {
            context: format!("opening a netlink socket in {}", self.path.display()),
            source,
        })?;
        runtime.spawn(connection);
        Ok(handle)
    }
}
