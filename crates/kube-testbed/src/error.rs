//! The harness's one error type.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a cluster could not be built, started, driven or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `scripts/kube-testbin` failed, or the directory it named lacks a component.
    #[error("cannot build the test control plane: {0}")]
    Build(String),

    /// A file operation on the cluster's directory failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `create`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program (and the component it is).
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A signal could not be sent to a component.
    #[error("cannot send {signal} to {component}: {source}")]
    Signal {
        /// The component.
        component: String,
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A component was asked to start while it still runs.
    #[error("{0} is still running; stop or kill it before starting it again")]
    Running(String),

    /// A component exited while the cluster waited for it.
    #[error("{component} exited ({status}) before it was ready; the end of its log:\n{log_tail}")]
    Exited {
        /// The component.
        component: String,
        /// How it ended.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },

    /// Something the cluster waits for did not happen in time.
    #[error("{what} did not happen within {waited:?}{}", detail(.log_tail))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The end of the logs that may say why (may be empty).
        log_tail: String,
    },

    /// A certificate could not be made.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),

    /// TLS could not be set up (the fault proxy).
    #[error("cannot set up TLS: {0}")]
    Tls(String),

    /// A kubeconfig could not be written or read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    /// A request to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

fn detail(log_tail: &str) -> String {
    if log_tail.is_empty() {
        String::new()
    } else {
        format!("; the end of the logs:\n{log_tail}")
    }
}

/// An [`Error::Io`] for `path`.
pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Context for kube errors: `.map_err(kube_error("create node kwok-node-0"))`.
pub(crate) fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}
