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
//!   journal/       the write-ahead journal: the writes sled does not hold yet
//!   db/            the sled database (sled 0.34.7), as of the last checkpoint
//! ```
//!
//! The database has one tree per [`Kind`](ipam_core::Kind), named after it
//! (`SpiderIPPool`, …). The key is the object's name, or `namespace NUL name` for namespaced
//! kinds, so a scan lists in (namespace, name) order and one namespace is a prefix scan. The
//! value is the JSON document. sled's default tree holds the record `berth-schema = "2"`
//! ([`SCHEMA_VERSION`]); a store of version 1 (no journal) is opened and marked 2; opening a
//! store of another version, or a sled database with data but without the record, fails with
//! [`OpenError::SchemaMismatch`] or [`OpenError::NotABerthStore`], whose messages say what to do.

//! # Versions and concurrency
//!
//! A `resourceVersion` is a number from sled's `generate_id`, which never repeats, even across
//! restarts and crashes. Every write reads the stored document, applies the rule from
//! `semantics` to it (that is where a stale caller version becomes `Conflict`), and stores the
//! result with a compare-and-swap against the bytes it read; when another write landed in
//! between, it reads again and re-applies. So each object is linearizable on its own, and the
//! versions of one object increase with every write. Nothing is atomic across objects.
//!
//! # Durability: a journal, group commit, checkpoints
//!
//! A write returns only once it is durable: it survives a crash of the process, of the kernel,
//! or of the power. A write is one *record* (every key it sets or removes, with a checksum)
//! appended to the journal, `<data dir>/journal/`; it is durable once a sync of the journal that
//! started after it has finished: the buffered records written to the file and one
//! `fdatasync`. Meanwhile the write's keys sit in an in-memory *overlay* that every read looks at
//! before sled, so a write is visible the moment it lands.
//!
//! sled is written by *checkpoints* only: once the journal holds [`OpenOptions::journal_limit`]
//! bytes (1 MiB by default), a thread of the store puts the overlay into sled, syncs sled (its
//! `flush` *plus an `fdatasync`* of its log and value files: on Linux sled's flush only calls
//! `sync_file_range`, see `disk.rs`), and removes the journal files it covered. Opening replays
//! whatever journal files are there into the overlay, and cuts off a record torn by a crash. So
//! sled never holds a write that did not return, and the journal holds everything sled lacks.
//!
//! Why not sled's own log: a sled flush writes each atomic batch as two log buffers, each
//! through sled's I/O thread pool (which wakes all seven of its threads per buffer) and each
//! followed by a `sync_file_range`; with our `fdatasync` that made three waits on the disk and
//! about thirty context switches per write. A journal record costs one `write` and one
//! `fdatasync`, shared by concurrent writers.
//!
//! Concurrent writers share syncs: while one sync runs, the writes that land queue behind it
//! and the next sync covers them all (see [`FlushPolicy`]; the `perf` example measures it). The
//! sync runs in place, never handed to another thread: on a multi-threaded tokio runtime
//! through `block_in_place`; on a current-thread one (the agent's) it stops the runtime, after
//! letting the other tasks run once so that the writes under way share it. So writes must be
//! awaited inside a tokio runtime (either flavour). Reads and the landing of a write run inline in the async methods:
//! they work in memory (a cold read may page in from disk).
//!
//! A write whose sync fails returns `Error::Backend` although other readers of this store may
//! already see it (like a Kubernetes write that timed out: re-read before retrying). Likewise a
//! read can see a write whose sync is still running; anything written after that read is
//! synced after it, because the journal is written and recovered in order. When the journal's
//! file cannot take a write (a full disk), the file is cut back to where it was and the
//! records wait for the next sync, so that no torn record sits before later ones (the open
//! would drop those with it: `tests/full_disk.rs`). A failed `fdatasync` stops every later
//! write until the store is opened again: the kernel may have dropped what it could not write.

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
//! stays as a safety net.) A checkpoint thread still running when the store is dropped is
//! joined first.
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
mod journal;
mod layout;
mod lock;
mod overlay;
mod records;
mod store;

pub use commit::{FlushPolicy, Stats};
pub use error::OpenError;
pub use layout::SCHEMA_VERSION;
pub use lock::LOCK_FILE;
pub use store::{OpenOptions, SledStore};
