//! Why a data dir could not be opened.
//!
//! This is the crate's one error type and it covers opening only. Once a store is open, its
//! failures are `ipam_core::Error`s like every other backend's: `NotFound`, `AlreadyExists`,
//! `Conflict` and `RetriesExhausted` for the object rules, `Malformed` for a stored document
//! that no longer parses, and `Backend` (with the `sled::Error` as its source) for the disk.

use std::path::PathBuf;
use std::time::Duration;

use crate::layout::SCHEMA_VERSION;

/// Why [`SledStore::open`](crate::SledStore::open) failed. Messages name the path and say what
/// to do; the underlying I/O or sled error, if any, is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data dir could not be created or is not a directory.
    #[error("cannot create the data dir {dir}")]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },

    /// The lock file could not be created, locked or written for a reason other than another
    /// process holding it.
    #[error("cannot lock {path}")]
    LockFile {
        /// `<data dir>/lock`.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },

    /// Another process kept the data dir locked for longer than the lock timeout.
    #[error(
        "the data dir {dir} is in use by another process{}: waited {waited:.1?} for {dir}/lock. \
         Let that process finish (or stop it), go through the `berth agent` that serves this \
         data dir if there is one, or open with a longer lock timeout",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder: Option<u32>,
        /// How long `open` waited.
        waited: Duration,
    },

    /// sled could not open (or recover) its database.
    #[error("cannot open the sled database {path}")]
    Sled {
        /// `<data dir>/db`.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },

    /// The database's files could not be synced to disk after opening.
    #[error("cannot sync the files of the sled database {path}")]
    Sync {
        /// `<data dir>/db`.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },

    /// A journal file could not be read, cut or created.
    #[error("cannot open the journal {path}")]
    Journal {
        /// The journal file or directory.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },

    /// A journal file that was synced whole holds a damaged record: the disk lost data.
    #[error(
        "{path}: damaged record at byte {offset} ({reason}) in a journal file that was synced \
         whole: the disk lost data. Move the file aside to open the store without the writes \
         from that record on"
    )]
    JournalDamaged {
        /// The journal file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// The store was written with another schema version than this build reads.
    #[error(
        "the data dir {dir} holds a Berth store of schema version {found}, but this build reads \
         schema version {SCHEMA_VERSION}: run the Berth release that wrote it (export its objects \
         with `berth get KIND -o yaml` and `berth apply -f` them into an empty data dir of this \
         release), or point the data dir elsewhere"
    )]
    SchemaMismatch {
        /// The data dir.
        dir: PathBuf,
        /// The version recorded in the store, as written.
        found: String,
    },

    /// `<data dir>/db` is a non-empty sled database without Berth's schema record.
    #[error(
        "{dir}/db is a sled database that Berth did not create (it has data but no \
         `berth-schema` record): point the data dir elsewhere, or move {dir}/db away to start \
         with an empty store"
    )]
    NotABerthStore {
        /// The data dir.
        dir: PathBuf,
    },
}

impl From<OpenError> for ipam_core::Error {
    /// An `ipam_core::Error::Backend` with the `OpenError` as its source, for callers that
    /// handle every store failure as one type.
    fn from(e: OpenError) -> Self {
        ipam_core::Error::backend("open the sled store", e)
    }
}
