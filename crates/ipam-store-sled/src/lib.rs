//! Berth's embedded store: the [`ipam_core::store::Store`] trait on a [sled] database in a data
//! dir, for the `berth` CLI, the `berth agent` and the CNI plugin in embedded mode.
//!
//! [`SledStore`] stores Kubernetes-style objects (SpiderSubnet, SpiderIPPool, SpiderEndpoint, …)
//! as JSON documents with Kubernetes write rules: versions, conflicts, the status subresource,
//! finalizers. The rules themselves are `ipam_core::store::semantics`, shared with every other
//! backend; this crate only stores, and passes the same conformance suite as the in-memory and
//! Kubernetes stores.
//!
//! # Layout
//!
//! ```text
//! <data dir>/      created with mode 0700 (an existing dir keeps its mode)
//!   lock           the lock file; holds the pid of the process that has the store open
//!   db/            the sled database (sled 0.34.7)
//! ```
//!
//! The database has one tree per [`Kind`](ipam_core::Kind), named after it
//! (`SpiderIPPool`, …). The key is the object's name, or `namespace NUL name` for namespaced
//! kinds, so a scan lists in (namespace, name) order and one namespace is a prefix scan. The
//! value is the JSON document. sled's default tree holds the record `berth-schema = "1"`
//! ([`SCHEMA_VERSION`]); opening a store of another version, or a sled database with data but
//! without the record, fails with [`OpenError::SchemaMismatch`] or
//! [`OpenError::NotABerthStore`], whose messages say what to do.
//!
//! # Versions and concurrency
//!
//! A `resourceVersion` is a number from sled's `generate_id`, which never repeats, even across
//! restarts and crashes. Every write reads the stored document, applies the rule from
//! `semantics` to it (that is where a stale caller version becomes `Conflict`), and stores the
//! result with a compare-and-swap against the bytes it read; when another write landed in
//! between, it reads again and re-applies. So each object is linearizable on its own, and the
//! versions of one object increase with every write. Nothing is atomic across objects.
//!
//! # Durability: group commit
//!
//! A write returns only once a sync of the database that started after it has finished, so a
//! write that returned survives a crash of the process, of the kernel, or of the power. A sync
//! is sled's `flush` *plus an `fdatasync`* of sled's log file and of any new value file: on
//! Linux sled's flush only calls `sync_file_range`, which commits no metadata and leaves the
//! disk's write cache unflushed (see `disk.rs` for the details and the one window left). sled's
//! periodic flusher is off: nothing is left for it to do.
//!
//! Concurrent writers share syncs: while one sync runs, the writes that land queue behind it
//! and the next sync covers them all (see [`FlushPolicy`]; the `perf` example measures it). The
//! sync runs through `tokio::task::spawn_blocking`, so no executor thread waits on the disk, and
//! writes must be awaited inside a tokio runtime (either flavour). Reads and the
//! compare-and-swap run inline in the async methods: they work in memory (a cold read may page
//! in from disk).
//!
//! A write whose flush fails returns `Error::Backend` although other readers of this store may
//! already see it (like a Kubernetes write that timed out: re-read before retrying). Likewise a
//! read can see a write whose flush is still running; anything written after that read is
//! flushed after it, because sled's log is recovered in order.
//!
//! # Locking: one process per data dir
//!
//! sled is single-process: its own lock on `db/db` fails at once when held. CNI calls are
//! concurrent processes, so [`SledStore::open`] first takes an exclusive `flock` on
//! `<data dir>/lock`, *waiting* for it (polling every few milliseconds, up to
//! [`OpenOptions::lock_timeout`], 30 s by default), then records its pid in the file. The lock is
//! held for the life of the store and released when it is dropped (or the process dies). A
//! timeout fails with [`OpenError::Locked`], naming the dir and the holder's pid.
//!
//! Dropping a sled database does not wait for sled's background threads, which can keep sled's
//! own lock a moment longer (spacejam/sled#1234, #1289), so a quick reopen, in this process or
//! the next, may find it taken: `open` retries sled for up to 5 s once it holds the lock file.
//! (Not seen here with the periodic flusher off, in 500 back-to-back reopens; the retry
//! stays as a safety net.)
//!
//! Watchers ([`Store::watch`](ipam_core::store::Store::watch)) see the writes made through this
//! [`SledStore`], in the order they landed: with one process per data dir, those are all of them.
//!
//! # Example
//!
//! ```
//! use ipam_core::store::TypedStore;
//! use ipam_core::{SpiderIPPool, ips};
//! use ipam_store_sled::{OpenOptions, SledStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path().join("berth"), OpenOptions::new())?;
//! let pool = SpiderIPPool::new("pool-a", "10.6.0.0/16".parse()?, ips!["10.6.168.171-10.6.168.180"]);
//! let stored = store.create_as(&pool).await?; // durable once it returns
//! drop(store);
//!
//! let store = SledStore::open(dir.path().join("berth"), OpenOptions::new())?;
//! let got: SpiderIPPool = store.get_as(None, "pool-a").await?.expect("survives a reopen");
//! assert_eq!(got, stored);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

mod commit;
mod disk;
mod error;
mod layout;
mod lock;
mod records;
mod store;

pub use commit::{FlushPolicy, Stats};
pub use error::OpenError;
pub use layout::SCHEMA_VERSION;
pub use lock::LOCK_FILE;
pub use store::{OpenOptions, SledStore};
