//! The cluster's processes: each component runs as a child with its output in a log file, inside
//! one process group per cluster, whose leader is the [`Reaper`].
//!
//! The reaper is a small `/bin/sh` child that holds the read end of a pipe from the process that
//! started the cluster. It does nothing until that pipe closes: when [`Cluster`](crate::Cluster)
//! stops it, when the test process exits (a shared cluster in a `static` is never dropped), and
//! when the test process is killed, even with SIGKILL. Then it kills the components it was told
//! about, waits until they are gone, and removes the cluster's directory. Ctrl-C in a terminal reaches only the terminal's foreground process group, which
//! the reaper and the components are not in, so an interrupted `cargo test` is cleaned up the
//! same way.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, io_error};

/// The reaper's script. `$1` is the cluster directory; the pids of the components arrive on
/// stdin, one per line, and stdin's end means "clean up now". The components get SIGKILL: a test
/// cluster's data is thrown away, and a graceful stop of etcd and the API server, each waiting
/// for the other's connections to close, takes seconds. Anything else in the group (a CNI plugin
/// the kubelet stand-in started) gets SIGTERM.
const REAPER: &str = r#"
trap '' INT TERM HUP PIPE
pids=
while read -r pid; do pids="$pids $pid"; done
kill -TERM 0 2>/dev/null
kill -KILL $pids 2>/dev/null
n=0
while [ $n -lt 100 ]; do
  alive=
  for pid in $pids; do
    # Gone, or a zombie that init has yet to reap (its parent, the test process, is dead).
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    state=${stat##*) }
    case "$state" in Z* | X*) ;; *) alive="$alive $pid" ;; esac
  done
  [ -z "$alive" ] && break
  sleep 0.1
  n=$((n + 1))
done
rm -rf -- "$1"
"#;

/// The leader of a cluster's process group; cleans up when the pipe from this process closes.
pub(crate) struct Reaper {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
}

impl Reaper {
    /// Starts the reaper for the cluster directory `dir`.
    pub(crate) fn start(dir: &Path) -> Result<Self, Error> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(REAPER)
            .arg("kube-testbed-reaper")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "/bin/sh (reaper)".into(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin: Mutex::new(stdin),
        })
    }

    /// The process group the components join.
    pub(crate) fn group(&self) -> i32 {
        self.child.id() as i32
    }

    /// Tells the reaper about a process to wait for at clean-up.
    fn watch(&self, pid: u32) {
        if let Some(stdin) = self.stdin.lock().expect("reaper pipe").as_mut() {
            // A reaper that is gone cannot be told; the process group still reaches the child.
            let _ = writeln!(stdin, "{pid}");
        }
    }

    /// Closes the pipe: the reaper ends whatever is left of the group and removes the
    /// directory. Waits for it to finish.
    pub(crate) fn finish(&mut self) {
        drop(self.stdin.lock().expect("reaper pipe").take());
        let _ = self.child.wait();
    }
}

/// One component of the cluster: its command line, its log, and the running child.
pub(crate) struct Process {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    group: i32,
    child: Mutex<Option<Child>>,
}

impl Process {
    /// Starts `program args` in the reaper's group, appending its stdout and stderr to `log`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: Vec<OsString>,
        log: PathBuf,
        reaper: &Reaper,
    ) -> Result<Self, Error> {
        let process = Self {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            log,
            group: reaper.group(),
            child: Mutex::new(None),
        };
        process.start(reaper)?;
        Ok(process)
    }

    /// Starts the command again, with the same arguments, after [`Self::stop`] or
    /// [`Self::kill`]. The log continues.
    pub(crate) fn start(&self, reaper: &Reaper) -> Result<(), Error> {
        let mut slot = self.child.lock().expect("component child");
        if let Some(child) = slot.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            return Err(Error::Running(self.name.clone()));
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| io_error("open", &self.log, e))?;
        let stderr = log.try_clone().map_err(|e| io_error("dup", &self.log, e))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(self.group)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: format!("{} ({})", self.program.display(), self.name),
                source,
            })?;
        reaper.watch(child.id());
        *slot = Some(child);
        Ok(())
    }

    /// The component's name: `etcd`, `kube-apiserver`, ...
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The pid of the running child, if it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut slot = self.child.lock().expect("component child");
        let child = slot.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// How the child ended, if it has.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        let mut slot = self.child.lock().expect("component child");
        slot.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` to the running child. Nothing happens if it does not run.
    pub(crate) fn signal(&self, signal: Signal) -> Result<(), Error> {
        match self.pid() {
            Some(pid) => kill(Pid::from_raw(pid as i32), signal).map_err(|errno| Error::Signal {
                component: self.name.clone(),
                signal: signal.as_str(),
                source: std::io::Error::from(errno),
            }),
            None => Ok(()),
        }
    }

    /// SIGKILL, as a crash would; waits for the child to end.
    pub(crate) fn kill(&self) {
        let _ = self.signal(Signal::SIGKILL);
        self.wait_for_exit(Duration::from_secs(30));
    }

    fn wait_for_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut slot = self.child.lock().expect("component child");
            let Some(child) = slot.as_mut() else {
                return true;
            };
            if !matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            drop(slot);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file (reads at most its last 256 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
