//! Engine settings and the clock.

use std::time::{Duration, SystemTime};

use crate::annotations::IpNumber;

/// A source of the current time (replaceable in tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The clock's time as Kubernetes writes timestamps.
pub(crate) fn rfc3339(clock: &dyn Clock) -> String {
    humantime::format_rfc3339_seconds(clock.now()).to_string()
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_ip_number: IpNumber::Flexible(1),
            max_retries: 24,
            claim_grace: Duration::from_secs(600),
        }
    }
}
