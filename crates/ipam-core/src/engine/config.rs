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
    /// Who makes a missing auto pool when a pod of its application allocates. `None` (the
    /// default, one node): the engine creates it there and then. `Some(limit)` (a cluster's
    /// node agent): the controller makes it, and the allocation waits for it on a watch of
    /// the pools, up to `limit`, then fails with a retryable error. The agent then needs no
    /// right to create pools, and a scale of many pods makes no races between nodes.
    pub auto_pool_wait: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_ip_number: IpNumber::Flexible(1),
            max_retries: 24,
            claim_grace: Duration::from_secs(600),
            batching: true,
            auto_pool_wait: None,
        }
    }
}
