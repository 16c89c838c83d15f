//! The Berth `Store` on Kubernetes CRDs (distributed mode).
//!
//! Not implemented yet: this crate is filled by a later issue. It exposes nothing, so nothing can
//! mistake it for a working backend.
