//! What the engine has done since it started, for metrics: counters and the latency of
//! allocations, kept with atomics (no lock on the hot path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the allocation latency histogram's buckets, in seconds (the last,
/// `+Inf`, is implied).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The engine's counters (see [`Engine::stats`](super::Engine::stats)).
#[derive(Default)]
pub(crate) struct Stats {
    allocations: AtomicU64,
    allocation_failures: AtomicU64,
    ips_allocated: AtomicU64,
    releases: AtomicU64,
    ips_released: AtomicU64,
    conflicts: AtomicU64,
    gc_released: AtomicU64,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], and one for `+Inf`.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

/// A snapshot of the engine's counters since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Allocations answered (CNI ADDs that succeeded).
    pub allocations: u64,
    /// Allocations that failed.
    pub allocation_failures: u64,
    /// IPs handed out by them.
    pub ips_allocated: u64,
    /// Releases answered (CNI DELs that succeeded).
    pub releases: u64,
    /// IPs freed by them.
    pub ips_released: u64,
    /// Writes that met a newer version (409) and were tried again.
    pub conflicts: u64,
    /// IPs GC freed.
    pub gc_released: u64,
    /// Allocation latency: how many took at most each bound of [`LATENCY_BUCKETS`]
    /// (cumulative), then all of them.
    pub latency_buckets: Vec<u64>,
    /// The sum of all allocation latencies.
    pub latency_sum: Duration,
}

impl Stats {
    pub(crate) fn allocated(&self, took: Duration, ips: Option<usize>) {
        match ips {
            Some(n) => {
                self.allocations.fetch_add(1, Ordering::Relaxed);
                self.ips_allocated.fetch_add(n as u64, Ordering::Relaxed);
            }
            None => {
                self.allocation_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seconds = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency[LATENCY_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn released(&self, ips: usize) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        self.ips_released.fetch_add(ips as u64, Ordering::Relaxed);
    }

    pub(crate) fn conflicted(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn collected(&self, ips: usize) {
        self.gc_released.fetch_add(ips as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            allocations: get(&self.allocations),
            allocation_failures: get(&self.allocation_failures),
            ips_allocated: get(&self.ips_allocated),
            releases: get(&self.releases),
            ips_released: get(&self.ips_released),
            conflicts: get(&self.conflicts),
            gc_released: get(&self.gc_released),
            latency_buckets: self.latency.iter().map(get).collect(),
            latency_sum: Duration::from_micros(get(&self.latency_micros)),
        }
    }
}
