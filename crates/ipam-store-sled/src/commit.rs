//! Group commit: concurrent writers share one flush.
//!
//! A write is durable once a sync of the journal ([`Journal::sync`]: the records buffered so far
//! appended to the journal file, and one `fdatasync`) that started after the write has finished. Every committed
//! write takes a ticket from a counter. To become durable, a writer queues on one async mutex,
//! the *flush lock*. The first in line reads the counter (every ticket up to it names a write
//! whose record is already in the journal's buffer), syncs, and publishes the counter as `flushed`. Whoever gets the lock
//! next checks `flushed` first: if its ticket is covered it returns without syncing; otherwise
//! it syncs for itself and for everyone who committed meanwhile. So while one sync runs, the
//! writes that arrive queue up and the next sync covers them all: under load the disk sees one
//! sync per batch instead of one per write, and a lone writer still pays exactly one.
//!
//! The journal is written in order and recovered as a prefix, so a sync also makes durable every
//! write before the one it was run for.
//!
//! The sync blocks on the disk and runs in place: on a multi-threaded tokio runtime through
//! `block_in_place`, on a single-threaded one after letting the other tasks run once (see
//! `GroupCommit::durable`), so writes must be awaited inside a tokio runtime. Writes inside `ipam_core::store::deferring_durability` do not
//! wait: the scope's one `sync` at the end covers them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::journal::Journal;

/// Why a flush failed: the journal's I/O error.
pub(crate) type FlushError = Box<dyn std::error::Error + Send + Sync>;

/// How writes are made durable before they return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Concurrent writers share one flush (group commit). The default.
    #[default]
    Group,
    /// Every write runs its own flush. Slower under concurrency; there to measure what group
    /// commit saves.
    EachWrite,
}

/// Write and flush counts of a store since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Writes committed (creates, updates, deletes that changed something).
    pub writes: u64,
    /// Flushes run for them. With group commit under concurrency, fewer than `writes`.
    pub flushes: u64,
}

/// The group commit state of one store.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    journal: Arc<Journal>,
    policy: FlushPolicy,
    /// Tickets handed out: the number of writes whose records are in the journal.
    committed: AtomicU64,
    /// Every ticket up to this one is durable.
    flushed: AtomicU64,
    flushes: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
}

/// A committed write waiting to become durable.
#[derive(Debug, Clone, Copy)]
#[must_use = "a write is not durable until `GroupCommit::durable` returns"]
pub(crate) struct Ticket(u64);

impl GroupCommit {
    pub(crate) fn new(journal: Arc<Journal>, policy: FlushPolicy) -> Self {
        GroupCommit {
            journal,
            policy,
            committed: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a write whose record is in the journal's buffer. Call it after the append, never
    /// before: the ticket promises the record precedes any flush that sees it.
    pub(crate) fn committed(&self) -> Ticket {
        Ticket(self.committed.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// The ticket of the last write committed (durable once it is, with everything before it).
    pub(crate) fn last(&self) -> Ticket {
        Ticket(self.committed.load(Ordering::Acquire))
    }

    /// Returns once the write of `ticket` is durable.
    pub(crate) async fn durable(&self, ticket: Ticket) -> Result<(), FlushError> {
        if self.policy == FlushPolicy::EachWrite {
            return self.flush().await;
        }
        if self.flushed.load(Ordering::Acquire) >= ticket.0 {
            return Ok(());
        }
        let _leader = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::Acquire) >= ticket.0 {
            return Ok(());
        }
        // On a single-threaded runtime the sync stops every task (see `flush`): let them run
        // once first, so that the writes under way commit and this sync covers them too.
        if !multi_threaded() {
            tokio::task::yield_now().await;
        }
        let upto = self.committed.load(Ordering::Acquire);
        self.flush().await?;
        self.flushed.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    async fn flush(&self) -> Result<(), FlushError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        // The sync blocks on the disk, and runs in place: a hand-off to a blocking thread and
        // back costs two thread wake-ups per write, and on a VM each wake-up of an idle CPU is
        // an exit to the host, whose delays made the tail of an agent-mode CNI call. On a
        // multi-threaded runtime the worker hands its other tasks to its peers, which go on
        // committing writes for the next sync; a single-threaded one waits for it.
        if multi_threaded() {
            tokio::task::block_in_place(|| self.journal.sync()).map_err(Into::into)
        } else {
            self.journal.sync().map_err(Into::into)
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            writes: self.committed.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// Whether the current tokio runtime is multi-threaded (`block_in_place` works there).
fn multi_threaded() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    )
}
