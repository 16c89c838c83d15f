//! Multi-NIC policy routing and the veth host link (`berth-route`).
//!
//! Not implemented yet: this crate is filled by the routing issue. It exposes nothing.
