//! The CNI protocol, for writing CNI plugins in Rust. Berth's plugins (`berth-ipam`,
//! `berth-route`) are built on it, and it knows nothing of Berth.
//!
//! A CNI plugin is a program the container runtime executes once per operation: the
//! operation and the attachment come in `CNI_*` environment variables, the network
//! configuration comes on stdin, and the answer — a result, or an error object with a
//! code — goes to stdout. This crate is that protocol and nothing else, written to the
//! letter of the spec for versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (the `cni-plugin`
//! crate on crates.io is unmaintained and refuses 0.3.1, which the Spiderpool setups Berth
//! replaces use). It holds no process-global state: every step is a function from values
//! to values, so all of it is unit-tested without a runtime.
//!
//! The pieces, in the order an invocation meets them:
//!
//! - [`mod@env`]: `CNI_COMMAND` and the variables each [`Command`] requires, validated
//!   (container id, interface name, netns path) → [`Env`].
//! - [`config`]: stdin → [`NetworkConfig`] — `name`, `cniVersion` ([`Version`]), a typed
//!   `prevResult`, GC's [`valid_attachments`](NetworkConfig::valid_attachments), and the raw
//!   object, from which a plugin reads its own keys with [`NetworkConfig::plugin_keys`] and
//!   an IPAM plugin its `ipam` keys with [`NetworkConfig::ipam_keys`] ([`de`] has serde
//!   helpers for reading them as the Go library does).
//! - [`args`]: `CNI_ARGS` → [`CniArgs`] (the Kubernetes pod identity, `IgnoreUnknown`, and
//!   the keys a plugin declares as its own, [`Plugin::args_keys`]).
//! - [`result`]: [`CniResult`], one model read from and written in any version (0.x
//!   `ips[].version`, the 1.1.0-only route and interface fields).
//! - [`error`]: the crate's [`Error`], its CNI [`code`](error::code) and the wire
//!   [`CniError`]; a plugin's own failures are [`Error::Plugin`], a code from 100 up and the
//!   plugin's typed error as `#[source]`.
//! - [`plugin`]: the [`Plugin`] trait (ADD, DEL, CHECK, GC, STATUS), [`Invocation`],
//!   and [`run`] / [`run_with`] / [`run_process`], which parse, dispatch, answer VERSION
//!   themselves, and print only the result or the error JSON.
//!
//! Logging goes through `tracing`; the protocol layer never installs a subscriber. A
//! plugin does it in [`Plugin::prepare`], from the config ([`logging`]: a file, never stdout).
//!
//! # Example
//!
//! A tiny IPAM plugin that always hands out one address, run on a fake ADD:
//!
//! ```
//! use std::collections::HashMap;
//! use berth_cni::{AttachmentRequest, CniResult, Error, IpConfig, Plugin, run};
//!
//! struct Fixed;
//!
//! impl Plugin for Fixed {
//!     fn add(&self, request: &AttachmentRequest) -> Result<CniResult, Error> {
//!         assert_eq!(request.ifname, "net1");
//!         let mut ip = IpConfig::new("10.7.168.173/16".parse().unwrap());
//!         ip.gateway = Some("10.7.0.1".parse().unwrap());
//!         Ok(CniResult { ips: vec![ip], ..CniResult::default() })
//!     }
//!     fn del(&self, _: &AttachmentRequest) -> Result<(), Error> { Ok(()) }
//!     fn check(&self, _: &AttachmentRequest) -> Result<(), Error> { Ok(()) }
//! }
//!
//! let env: HashMap<String, String> = [
//!     ("CNI_COMMAND", "ADD"),
//!     ("CNI_CONTAINERID", "4f9e1c0c2b9a"),
//!     ("CNI_NETNS", "/var/run/netns/test-app"),
//!     ("CNI_IFNAME", "net1"),
//!     ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test-app-0"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_owned()))
//! .collect();
//! let stdin = br#"{"cniVersion": "0.3.1", "name": "macvlan-conf-ens224",
//!                  "type": "macvlan", "ipam": {"type": "spiderpool"}}"#;
//!
//! let out = run(&Fixed, &env, stdin);
//! assert_eq!(out.exit_code, 0);
//! assert_eq!(
//!     serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
//!     serde_json::json!({
//!         "cniVersion": "0.3.1",
//!         "ips": [{"version": "4", "address": "10.7.168.173/16", "gateway": "10.7.0.1"}]
//!     })
//! );
//! ```
#![forbid(unsafe_code)]

pub mod args;
pub mod command;
pub mod config;
pub mod de;
pub mod env;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod plugin;
pub mod result;
pub mod version;

pub use args::CniArgs;
pub use command::Command;
pub use config::{GcAttachment, NetworkConfig};
pub use env::Env;
pub use error::{CniError, Error};
pub use plugin::{
    AttachmentRequest, Invocation, NetworkRequest, Output, Plugin, run, run_process, run_with,
};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{SUPPORTED, Version, VersionInfo};

/// The version of these crates and the git commit of the Berth checkout they were built from
/// (`0.1.0 (commit 1a2b3c4)`; `unknown` outside a git checkout), which Berth's programs report
/// (`berth --version`, the plugins' log line of each call through [`Plugin::version`]).
pub const BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BERTH_GIT_COMMIT"),
    ")"
);
