//! Berth: fixed IPs on every NIC for underlay container networks.
//!
//! This is the facade crate: Berth's allocation core ([`ipam_core`], also reachable as
//! [`core`]) at its root, the storage backends behind features, and what the `berth` command
//! line shares with the examples: reading manifests ([`manifest`]) and printing
//! `kubectl get`-style tables ([`table`]).
//!
//! # Embedding
//!
//! Open a store, put an [`Engine`] on it, apply Spiderpool's objects, allocate for a pod:
//!
//! ```no_run
//! use berth::sled::{OpenOptions, SledStore};
//! use berth::{AllocateRequest, Engine, NicRequest, PodContext, SpiderIPPool, ips};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(SledStore::open("/var/lib/my-runtime/ipam", OpenOptions::new())?);
//! engine
//!     .apply(SpiderIPPool::new("pool-a", "10.6.0.0/16".parse()?, ips!["10.6.168.171-10.6.168.180"]))
//!     .await?;
//! let allocation = engine
//!     .allocate(&AllocateRequest {
//!         pod: PodContext { namespace: "default".into(), name: "web-0".into(), ..Default::default() },
//!         container_id: "c1".into(),
//!         nics: vec![NicRequest {
//!             interface: "eth0".into(),
//!             default_ipv4_pools: vec!["pool-a".into()],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", allocation.nics[0].ips[0].address);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` runs this with two NICs, the release, and one disk wait for a whole
//! operation (`store::deferring_durability`). Auto pools for applications, StatefulSet pods that
//! keep their IPs, and GC are in [`engine`].
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `sled` | [`sled`]: the embedded store (`ipam-store-sled`), one data dir per machine |
//! | `k8s` | `k8s`: the Kubernetes store (`ipam-store-k8s`): Spiderpool's CRDs on an API server |
//! | `cli` (default; implies `sled` and `k8s`) | the `berth` command line |
//!
//! The CNI plugins are the
//! crates `cni-plugin` (`berth-ipam`) and `netns-routing` (`berth-route`), on the CNI protocol
//! crate `berth-cni`.

#![forbid(unsafe_code)]

pub use ipam_core as core;
pub use ipam_core::*;

#[cfg(feature = "sled")]
pub use ipam_store_sled as sled;

#[cfg(feature = "k8s")]
pub use ipam_store_k8s as k8s;

#[cfg(feature = "cli")]
pub mod cli;
pub mod manifest;
pub mod table;
