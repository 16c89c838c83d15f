//! The CNI protocol layer and the `berth-ipam` IPAM plugin.
//!
//! Not implemented yet: this crate is filled by the CNI plugin issue. It exposes nothing.
