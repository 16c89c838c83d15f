//! Where the control plane's executables come from: `scripts/kube-testbin`, which builds them from
//! `testbed/kube` when they are missing or stale and prints their directory.
//!
//! `KUBE_TESTBED_BIN_DIR` names a directory to use instead (it must hold every component); the
//! build is skipped then. The script runs once per process; it takes a lock, so test binaries and
//! `scripts/kube-testbed up` running at once build only once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The executables a cluster needs, all in one directory.
pub const COMPONENTS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// The repository this crate is part of.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/kube-testbed sits two levels below the repository")
        .to_owned()
}

/// The directory holding the components, built first when needed.
pub fn dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| locate().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Build)
}

fn locate() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("KUBE_TESTBED_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return check(dir);
    }
    let script = repository().join("scripts/kube-testbin");
    let output = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Build(format!(
            "{} failed ({}); its output is above",
            script.display(),
            output.status
        )));
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    check(PathBuf::from(printed.trim()))
}

fn check(dir: PathBuf) -> Result<PathBuf, Error> {
    for component in COMPONENTS {
        if !dir.join(component).is_file() {
            return Err(Error::Build(format!(
                "{} has no {component}; run scripts/kube-testbin",
                dir.display()
            )));
        }
    }
    Ok(dir)
}
