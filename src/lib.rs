//! Berth: fixed IPs on every NIC for underlay container networks.
//!
//! This is the facade crate. The allocation core (IP sets, the allocator, Spiderpool's object
//! model, the `Store` trait and the engine) is [`ipam_core`], re-exported as [`core`]; this crate
//! adds what the `berth` command line and the examples share: reading manifests
//! ([`manifest`]) and printing `kubectl get`-style tables ([`table`]).
//!
//! Storage backends live in their own crates (`ipam-store-sled` for one machine,
//! `ipam-store-k8s` for a cluster), the CNI plugin in `cni-plugin`, and the multi-NIC routing
//! plugin in `netns-routing`.

#![forbid(unsafe_code)]

pub use ipam_core as core;

pub mod manifest;
pub mod table;
