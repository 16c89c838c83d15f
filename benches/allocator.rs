//! Allocate-and-release cost of [`ipam_core::Allocator`] against a first-fit scan, and its
//! memory per allocated IP.
//!
//! Group `alloc_release`: one iteration allocates one address and releases it again, on a pool
//! filled beforehand (outside the timed loop), so the pool stays at the same fill level:
//!
//! | case | pool |
//! |---|---|
//! | `v4_16_empty` | `10.0.0.0/16` less its network and broadcast address (65534), nothing allocated |
//! | `v4_16_99pct` | the same, its lowest 99% allocated (64878), as a first-fit pool fills |
//! | `v6_64_1m` | `fd00::/64` with 1,000,000 allocations (berth only: first fit would scan them all) |
//!
//! Two contenders, ids `BenchmarkId::new("berth" | "first_fit", case)`:
//! - `berth`: the allocator as it is, round robin over fresh addresses and a FIFO cooling queue
//!   for released ones. Releasing the address just allocated puts it at the back of the queue,
//!   so the next iteration takes another address: that is the design, and what is measured
//!   (on the 99pct pool the 656 free addresses are soon all cooling, and each allocation then
//!   takes the longest-cooled one);
//! - `first_fit`: what Spiderpool (`FindAvailableIPs(..., 1)`) and whereabouts do: walk the
//!   pool's addresses in ascending order and hand out the first one not in the used set (a hash
//!   set, as Spiderpool's Go map). Here the set is kept across calls, where Spiderpool rebuilds
//!   it from the pool status on every call, so this is a lower bound on their cost.
//!
//! Before the criterion run the binary prints, once, the live heap bytes per allocated IP of a
//! `/64` with 1,000,000 allocations: berth filled sequentially (the runs coalesce), berth filled
//! with every other address (nothing coalesces), and the first-fit hash set. A counting global
//! allocator measures them: bytes requested from the system allocator, its own per-block
//! overhead not included. Every allocation in the binary goes through that counter (one relaxed
//! atomic add), timed loops included.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p berth-benches --bench allocator
//! ```
//!
//! Times are never asserted; only the ratio of the two medians of a case means anything, since
//! both run side by side on the same machine. Criterion writes each median to
//! `target/criterion/alloc_release/<berth|first_fit>/<case>/new/estimates.json` (under
//! `$CARGO_TARGET_DIR` if set); a ratio below 1 means berth is faster. To print them:
//!
//! ```text
//! for c in v4_16_empty v4_16_99pct; do d=target/criterion/alloc_release; jq -rn --arg c $c --slurpfile b $d/berth/$c/new/estimates.json --slurpfile f $d/first_fit/$c/new/estimates.json '"\($c) berth/first_fit = \($b[0].median.point_estimate / $f[0].median.point_estimate)"'; done
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, measurement::WallTime};
use ipam_core::{Allocator, Exhausted, IpSet, ips, network_and_broadcast};

/// Allocations of the `v6_64_1m` case and of the memory figures.
const V6_ALLOCATIONS: u128 = 1_000_000;

/// Bytes currently allocated through [`Counting`].
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes in [`LIVE`].
struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counter only records sizes of blocks `System` handed out or took back.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// What both contenders offer: one address out, one address back.
trait Pool {
    fn allocate(&mut self) -> Result<IpAddr, Exhausted>;
    fn release(&mut self, ip: &IpAddr) -> bool;
}

impl Pool for Allocator {
    fn allocate(&mut self) -> Result<IpAddr, Exhausted> {
        Allocator::allocate(self)
    }

    fn release(&mut self, ip: &IpAddr) -> bool {
        Allocator::release(self, ip)
    }
}

/// First fit as Spiderpool and whereabouts do it: the lowest pool address not in use.
struct FirstFit {
    pool: IpSet,
    used: HashSet<IpAddr>,
}

impl FirstFit {
    /// A first-fit pool over `pool` whose lowest `n` addresses are in use, as `n` first-fit
    /// allocations leave it (inserted directly: allocating them would cost O(n²)).
    fn filled(pool: IpSet, n: u128) -> Self {
        let used: HashSet<IpAddr> = pool.first_n(n).iter().collect();
        assert_eq!(used.len() as u128, n, "the pool holds {n} addresses");
        FirstFit { pool, used }
    }
}

impl Pool for FirstFit {
    fn allocate(&mut self) -> Result<IpAddr, Exhausted> {
        let ip = self
            .pool
            .iter()
            .find(|ip| !self.used.contains(ip))
            .ok_or(Exhausted)?;
        self.used.insert(ip);
        Ok(ip)
    }

    fn release(&mut self, ip: &IpAddr) -> bool {
        self.used.remove(ip)
    }
}

/// `10.0.0.0/16` without its network and broadcast address, as a pool of that subnet hands out.
fn v4_16() -> IpSet {
    const NET: &str = "10.0.0.0/16";
    ips![NET].difference(&network_and_broadcast(&NET.parse().expect("valid CIDR")))
}

/// The lowest 99% of `pool`'s addresses, rounded down.
fn ninety_nine_pct(pool: &IpSet) -> u128 {
    pool.len() * 99 / 100
}

/// A berth allocator over `pool` whose lowest `n` addresses are allocated.
fn berth_filled(pool: IpSet, n: u128) -> Allocator {
    let low = pool.first_n(n);
    let mut a = Allocator::new(pool);
    for ip in low.iter() {
        a.take(ip);
    }
    assert_eq!(a.allocated(), n);
    a
}

/// A berth allocator over `fd00::/64` after `n` calls to `allocate`.
fn berth_v6_sequential(n: u128) -> Allocator {
    let mut a = Allocator::new(ips!["fd00::/64"]);
    for _ in 0..n {
        a.allocate().expect("a /64 has room");
    }
    a
}

/// Live heap bytes that `fill` leaves behind (what it returns is kept alive until measured).
fn live_bytes_of<T>(fill: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let kept = fill();
    let after = LIVE.load(Ordering::Relaxed);
    (kept, after.saturating_sub(before))
}

/// Prints the heap bytes per allocated IP of a `/64` with [`V6_ALLOCATIONS`] allocations.
fn print_memory() {
    let per_ip = |bytes: usize| bytes as f64 / V6_ALLOCATIONS as f64;

    let (a, bytes) = live_bytes_of(|| berth_v6_sequential(V6_ALLOCATIONS));
    println!(
        "memory v6_64_1m sequential: {:.4} bytes per allocated IP ({} runs, {bytes} bytes)",
        per_ip(bytes),
        a.run_count()
    );
    drop(a);

    let (a, bytes) = live_bytes_of(|| {
        let base = u128::from("fd00::".parse::<Ipv6Addr>().expect("valid address"));
        let mut a = Allocator::new(ips!["fd00::/64"]);
        for k in 0..V6_ALLOCATIONS {
            a.take(IpAddr::V6(Ipv6Addr::from(base + 2 * k)));
        }
        a
    });
    assert_eq!(a.allocated(), V6_ALLOCATIONS);
    println!(
        "memory v6_64_1m fragmented: {:.4} bytes per allocated IP ({} runs, {bytes} bytes)",
        per_ip(bytes),
        a.run_count()
    );
    drop(a);

    let (f, bytes) = live_bytes_of(|| FirstFit::filled(ips!["fd00::/64"], V6_ALLOCATIONS));
    println!(
        "memory v6_64_1m first_fit: {:.4} bytes per allocated IP (HashSet<IpAddr> of {} entries, {bytes} bytes)",
        per_ip(bytes),
        f.used.len()
    );
}

/// Benchmarks allocate-then-release on the pool `build` makes, built only if the benchmark runs
/// (a filter may skip it) and kept across criterion's samples.
fn bench<P: Pool>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    contender: &str,
    case: &str,
    build: impl FnOnce() -> P,
) {
    let mut build = Some(build);
    let mut pool: Option<P> = None;
    group.bench_function(BenchmarkId::new(contender, case), |b| {
        let p = pool.get_or_insert_with(|| (build.take().expect("built once"))());
        b.iter(|| {
            let ip = p.allocate().expect("the pool has a free address");
            let released = p.release(&ip);
            debug_assert!(released, "{ip} was just allocated");
            black_box(ip)
        });
    });
}

fn alloc_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_release");

    bench(&mut group, "berth", "v4_16_empty", || {
        Allocator::new(v4_16())
    });
    bench(&mut group, "first_fit", "v4_16_empty", || {
        FirstFit::filled(v4_16(), 0)
    });

    let pool = v4_16();
    let n = ninety_nine_pct(&pool);
    bench(&mut group, "berth", "v4_16_99pct", || {
        berth_filled(pool.clone(), n)
    });
    bench(&mut group, "first_fit", "v4_16_99pct", || {
        FirstFit::filled(pool.clone(), n)
    });

    bench(&mut group, "berth", "v6_64_1m", || {
        berth_v6_sequential(V6_ALLOCATIONS)
    });

    group.finish();
}

fn main() {
    // `--list` output is parsed by test runners; keep it clean.
    if !std::env::args().any(|a| a == "--list") {
        print_memory();
    }
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    alloc_release(&mut c);
    c.final_summary();
}
