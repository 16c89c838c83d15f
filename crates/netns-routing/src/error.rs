//! The crate's one error type, and how it reaches a CNI runtime.

use std::fmt;
use std::path::PathBuf;

/// CNI error codes of `berth-route` (Berth's own range, after `berth-ipam`'s 100–108).
pub mod code {
    /// A netlink request failed while programming the pod or the node.
    pub const NETLINK: u32 = 110;
    /// CHECK: something ADD set up is missing or different.
    pub const MISSING: u32 = 111;
}

/// Which network namespace an operation ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The pod's namespace (`CNI_NETNS`).
    Pod,
    /// The node's namespace (where the plugin runs).
    Node,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Pod => "pod",
            Side::Node => "node",
        })
    }
}

/// Everything that can fail while wiring a pod's NICs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network namespace could not be opened or entered.
    #[error("cannot enter the network namespace {}", .path.display())]
    Netns {
        /// The namespace file, e.g. `/var/run/netns/pod1`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed; `op` reads like the `ip` command that would do the same.
    #[error("{side}: {op}")]
    Netlink {
        /// Where it ran.
        side: Side,
        /// The operation, e.g. `ip rule add from 10.7.168.173 lookup 100 pref 32764`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link the operation needs does not exist.
    #[error("{side}: link {name} not found{hint}")]
    LinkNotFound {
        /// Where it was looked for.
        side: Side,
        /// Its name.
        name: String,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// The input cannot be wired: a NIC name without a table number, no address, …
    #[error("{0}")]
    Invalid(String),
    /// CHECK: what ADD set up and is not there (or not as it should be), every item named.
    #[error("{nic}: {} item(s) missing: {}", .items.len(), .items.join("; "))]
    Missing {
        /// The NIC checked.
        nic: String,
        /// One line per missing item, e.g. `pod: rule from 10.7.168.173 lookup 100 pref 32764`.
        items: Vec<String>,
    },
    /// A sysctl could not be written in the pod.
    #[error("cannot write {path}")]
    Sysctl {
        /// The `/proc/sys/...` path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Other I/O (starting the runtime, a thread).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Teardown went on after failures: every one of them.
    #[error("{} failure(s): {}", .0.len(), join_chains(.0))]
    Many(Vec<Error>),
}

/// The kernel's errno (positive, e.g. 17 for EEXIST) when `e` is a netlink refusal.
pub(crate) fn kernel_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// The outcome of one netlink request: a kernel refusal with an errno in `benign` (the state
/// already is as asked: EEXIST on an add, ENOENT on a delete) is success, any other failure an
/// [`Error::Netlink`] naming `op`.
pub(crate) fn outcome(
    result: Result<(), rtnetlink::Error>,
    benign: &[i32],
    side: Side,
    op: impl FnOnce() -> String,
) -> Result<(), Error> {
    match result {
        Err(e) if !kernel_errno(&e).is_some_and(|n| benign.contains(&n)) => Err(Error::Netlink {
            side,
            op: op(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Runs a netlink dump to its end; a failure is an [`Error::Netlink`] naming `op`.
pub(crate) async fn dump<T>(
    request: impl futures::TryStream<Ok = T, Error = rtnetlink::Error>,
    side: Side,
    op: impl FnOnce() -> String,
) -> Result<Vec<T>, Error> {
    use futures::TryStreamExt;
    request
        .try_collect()
        .await
        .map_err(|source| Error::Netlink {
            side,
            op: op(),
            source,
        })
}

impl Error {
    /// The netlink errno (positive, e.g. 17 for EEXIST) when this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } => kernel_errno(source),
            _ => None,
        }
    }

    /// Collects teardown results: `Ok` when `errors` is empty, the one error, or [`Error::Many`].
    pub fn collect(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }

    /// The CNI code this error reaches the runtime with.
    pub fn cni_code(&self) -> u32 {
        use berth_cni::error::code as cni;
        match self {
            Error::Netns { .. } | Error::Sysctl { .. } | Error::Io { .. } => cni::IO,
            Error::Netlink { .. } => code::NETLINK,
            Error::LinkNotFound { .. } | Error::Missing { .. } => code::MISSING,
            Error::Invalid(_) => cni::INVALID_CONFIG,
            Error::Many(errors) => errors.first().map_or(cni::INTERNAL, Error::cni_code),
        }
    }
}

pub use berth_cni::error::chain;

fn join_chains(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Error> for berth_cni::Error {
    /// `Invalid` → 7; netns, sysctl and I/O → 5; netlink → 110; CHECK findings and
    /// missing links → 111. The message is the whole chain, so the runtime's log says which
    /// `ip` operation failed and why.
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(msg) => berth_cni::Error::InvalidConfig(msg),
            other => berth_cni::Error::Cni(berth_cni::CniError::new(
                other.cni_code(),
                other.to_string(),
                berth_cni::error::source_chain(&other),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_collect() {
        assert!(Error::collect(vec![]).is_ok());
        let one = Error::collect(vec![Error::Invalid("x".into())]).unwrap_err();
        assert_eq!(one.cni_code(), 7);
        let many = Error::collect(vec![
            Error::Missing {
                nic: "net1".into(),
                items: vec!["pod: rule from 10.7.168.173 lookup 100 pref 32764".into()],
            },
            Error::Invalid("y".into()),
        ])
        .unwrap_err();
        assert_eq!(many.cni_code(), code::MISSING);
        assert_eq!(
            many.to_string(),
            "2 failure(s): net1: 1 item(s) missing: pod: rule from 10.7.168.173 lookup 100 \
             pref 32764; y"
        );
        let cni: berth_cni::Error = many.into();
        assert_eq!(cni.code(), code::MISSING);
    }

    #[test]
    fn io_chain_in_details() {
        let e = Error::Netns {
            path: "/var/run/netns/gone".into(),
            source: std::io::Error::from_raw_os_error(2),
        };
        let cni = berth_cni::Error::from(e).to_cni_error();
        assert_eq!(cni.code, 5);
        assert_eq!(
            cni.msg,
            "cannot enter the network namespace /var/run/netns/gone"
        );
        assert!(cni.details.starts_with("No such file"), "{}", cni.details);
    }
}
