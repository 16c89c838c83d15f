//! What Berth's tests share (`publish = false`; a dev-dependency of the crates, and of the
//! seed lab): unique names, commands, network namespaces, CNI plugin runs, and the seed's
//! network.
//!
//! - [`unique`], [`run`], [`ip`]: names that do not collide between test processes, and
//!   commands that fail loudly;
//! - [`netns::Ns`]: a network namespace, deleted when dropped;
//! - [`plugin`]: running a CNI plugin as a runtime does — exactly the environment given,
//!   stdin fed, stdout and exit code read back — on the host or inside a namespace;
//! - [`seed`]: the seed's topology in namespaces, and CNI chains run as libcni runs them.
//!
//! # Privileged tests
//!
//! Tests that need root and network namespaces run only when their crate's `root-tests`
//! feature is on; otherwise they are reported as ignored, never as passed:
//!
//! ```text
//! #[test]
//! #[cfg_attr(not(feature = "root-tests"), ignore = "needs root and network namespaces: scripts/test runs it as root")]
//! fn debian_macvlan_drives_berth_ipam() {
//!     berth_test_support::require(&["/usr/lib/cni/macvlan"]);
//!     // ...
//! }
//! ```
//!
//! `scripts/test` turns the features on when it runs as root (and installs what these tests
//! need first). With a feature on, a missing prerequisite is a failure that says what to
//! install, not a skip.

#![forbid(unsafe_code)]

pub mod netns;
pub mod plugin;
pub mod seed;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use netns::Ns;
pub use plugin::Outcome;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique on this machine among running processes: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether this process runs as root. For programs such as the lab that explain what they
/// need; tests are gated by their crate's `root-tests` feature instead.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Fails the test, saying what to do, unless it runs as root and every path in `needs`
/// exists. For privileged tests that a `root-tests` feature enabled.
pub fn require(needs: &[&str]) {
    assert!(
        is_root(),
        "this test needs root (network namespaces): run it as root, as scripts/test does"
    );
    for need in needs {
        assert!(
            Path::new(need).exists(),
            "this test needs {need}: apt-get install containernetworking-plugins (scripts/test \
             installs it as root)"
        );
    }
}

/// Runs a command; its stdout, or the error with stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// `ip <args>`, panicking on failure.
pub fn ip(args: &[&str]) -> String {
    run("ip", args).unwrap_or_else(|e| panic!("{e}"))
}
