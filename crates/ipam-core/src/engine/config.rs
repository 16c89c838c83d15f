//! Engine settings.

use std::time::{Duration, SystemTime};

use crate::annotations::IpNumber;

/// Now, as Kubernetes writes timestamps.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Auto pool size when an application has no `ippool-ip-number` annotation (Spiderpool
    /// documents `+1`).
    pub default_ip_number: IpNumber,
    /// Attempts of a write that keeps conflicting before giving up.
    pub max_retries: u32,
    /// How old a subnet claim without its pool must be before GC frees it (an apply may be
    /// between claiming and creating the pool).
    pub claim_grace: Duration,
    /// Whether concurrent operations on one pool share one write (group commit, the default).
    /// Off, each allocation and release is a write of its own, as in Spiderpool: there to
    /// measure what batching saves.
    pub batching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_ip_number: IpNumber::Flexible(1),
            max_retries: 24,
            claim_grace: Duration::from_secs(600),
            batching: true,
        }
    }
}
