//! Berth's CNI IPAM plugin, `berth-ipam`, and the node agent that serves it, on top of the CNI
//! protocol crate ([`berth_cni`]) and Berth's engine ([`ipam_core`]).
//!
//! The pieces:
//!
//! - [`ipam`]: the `berth-ipam` plugin ([`BerthIpam`]; binary `src/bin/berth-ipam.rs`), its
//!   mode resolution (agent or embedded), the pod identity, and the operations on the engine
//!   shared with the agent; [`NetnsLiveness`] for `berth gc` in embedded mode;
//! - [`agent`]: the node agent's HTTP server on a unix socket ([`agent::serve`]), its client,
//!   and [`agent::AgentStore`], the store of a data dir an agent serves;
//! - [`datadir`]: [`open_data_dir`], the store of a data dir — the agent's when one serves
//!   it, else the sled store under its lock. The `berth` CLI and `berth-ipam` both use it;
//! - [`owner`]: `BERTH_OWNER` in `CNI_ARGS` ([`Owner`]), which binds a pod to a workload
//!   registered in the embedded store;
//! - [`error`]: the crate's [`Error`], which keeps the engine's errors typed and becomes a CNI
//!   error with Berth's [`code`](error::code) at the protocol boundary.
#![forbid(unsafe_code)]

pub mod agent;
pub mod datadir;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ipam;
pub mod owner;

pub use datadir::{DataDirOptions, DataDirStore, LockWait, open_data_dir, open_data_dir_waiting};
pub use error::Error;
pub use ipam::{BerthIpam, IpamConfig, NetnsLiveness};
pub use owner::{BERTH_OWNER, Owner};
