//! The Berth `Store` on sled (embedded mode).
//!
//! Not implemented yet: this crate is filled by the embedded-store issue. It exposes nothing, so
//! nothing can mistake it for a working backend.
