//! What a write touches and what a checkpoint moves: the overlay, the journal and sled, shared
//! with the checkpoint thread.
//!
//! A write, under the write lock `order`: its record into the journal's buffer, its changes
//! into the overlay; it is durable once a sync of the journal that started after it finished.
//! A checkpoint, when the journal has grown past the store's limit:
//!
//! 1. under the write lock, sync the journal's buffer and start a new journal file, and take a
//!    snapshot of the overlay: it now holds exactly what the closed files hold, newest values;
//! 2. without the lock (writes go on, into the new file), put the snapshot into sled and sync
//!    sled (its flush plus the `fdatasync` of `disk.rs`);
//! 3. remove the closed journal files, and drop from the overlay the keys no write changed since
//!    the snapshot.
//!
//! A crash at any step leaves journal files that hold everything sled may lack; opening replays
//! them, oldest first, into the overlay: each key ends with the newest value any durable write
//! gave it. sled is never written but from a snapshot of writes already durable in the journal,
//! so it never holds a write that did not return.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipam_core::Kind;
use sled::IVec;

use crate::disk::Disk;
use crate::journal::{Change, Journal};
use crate::overlay::{self, Overlay};

/// The parts of a store that writes and checkpoints share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Held across a write's read-compute-record and its notification, so that writes land,
    /// are journaled and are seen in one order. It never spans an await or a sync.
    pub(crate) order: Mutex<()>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) overlay: Mutex<Overlay>,
    /// One tree per kind, in the order of `Kind::ALL`.
    pub(crate) trees: Vec<sled::Tree>,
    pub(crate) disk: Disk,
    /// A checkpoint is running (at most one at a time).
    pub(crate) checkpointing: AtomicBool,
}

impl Shared {
    pub(crate) fn order(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data: a panic elsewhere leaves nothing half-done.
        self.order.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn overlay(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tree(&self, kind: Kind) -> &sled::Tree {
        &self.trees[overlay::index(kind)]
    }

    /// Lands a write: its record into the journal's buffer and its changes into the overlay.
    /// The caller holds the write lock and takes its ticket after this.
    pub(crate) fn land(&self, seq: u64, changes: &[Change]) {
        self.journal.append(seq, changes);
        self.overlay().apply(seq, changes);
    }

    /// The newest value of `key`.
    pub(crate) fn get(&self, kind: Kind, key: &[u8]) -> sled::Result<Option<IVec>> {
        if let Some(value) = self.overlay().get(kind, key) {
            return Ok(value);
        }
        self.tree(kind).get(key)
    }

    /// The keys starting with `prefix` (every key with an empty one) from `from` on, with their
    /// newest values, in key order.
    pub(crate) fn scan(
        &self,
        kind: Kind,
        prefix: &[u8],
        from: &[u8],
    ) -> sled::Result<Vec<(IVec, IVec)>> {
        // The overlay first: a key a checkpoint moves to sled meanwhile is then in both (same
        // value), never in neither.
        let over = self.overlay().scan(kind, prefix, from);
        let start = if from > prefix { from } else { prefix };
        let under = self
            .tree(kind)
            .range(start..)
            .take_while(|e| !matches!(e, Ok((k, _)) if !k.starts_with(prefix)))
            .collect::<sled::Result<Vec<_>>>()?;
        Ok(overlay::merge(under, over))
    }

    /// Moves what the journal holds into sled and removes the journal files it covered (see
    /// the module documentation). Blocks on the disk.
    pub(crate) fn checkpoint(&self) -> io::Result<()> {
        let (closed, snapshot) = {
            let _order = self.order();
            let closed = self.journal.rotate()?;
            (closed, self.overlay().snapshot())
        };
        for (change, _) in &snapshot.changes {
            let tree = self.tree(change.kind);
            match &change.value {
                Some(v) => tree.insert(change.key.as_slice(), v.clone()),
                None => tree.remove(change.key.as_slice()),
            }
            .map_err(io::Error::other)?;
        }
        self.disk.sync()?;
        self.journal.remove_upto(closed)?;
        let left = {
            let mut overlay = self.overlay();
            overlay.prune(&snapshot);
            overlay.len()
        };
        tracing::debug!(
            moved = snapshot.changes.len(),
            left,
            "checkpoint: the closed journal files are in sled"
        );
        Ok(())
    }

    /// Runs a checkpoint on its own thread unless one is running. The thread's handle goes to
    /// `handle`, which the store joins before it closes.
    pub(crate) fn checkpoint_in_background(
        self: &Arc<Self>,
        handle: &Mutex<Option<std::thread::JoinHandle<()>>>,
    ) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut slot = handle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = slot.take() {
            // The previous checkpoint's thread has finished (`checkpointing` was clear).
            let _ = done.join();
        }
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("berth-checkpoint".into())
            .spawn(move || {
                if let Err(e) = shared.checkpoint() {
                    // The journal still holds everything: nothing is lost, the next one retries.
                    tracing::warn!(error = %e, "checkpoint failed; the journal keeps the writes");
                }
                shared.checkpointing.store(false, Ordering::Release);
            });
        match spawned {
            Ok(thread) => *slot = Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a checkpoint thread");
                self.checkpointing.store(false, Ordering::Release);
            }
        }
    }
}
