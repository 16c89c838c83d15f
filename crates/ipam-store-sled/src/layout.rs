//! What lies where on disk (schema version 2).
//!
//! ```text
//! <data dir>/            mode 0700 when Berth creates it
//!   lock                 the lock file, holding the holder's pid (see `lock.rs`)
//!   journal/             the write-ahead journal (see `journal.rs`): the writes sled may lack
//!   db/                  the sled database, as of the last checkpoint
//!     default tree       berth-schema = "2"
//!     tree "SpiderSubnet", "SpiderIPPool", "SpiderReservedIP"      (cluster-scoped)
//!                        key  = name
//!     tree "SpiderEndpoint", "Deployment", "StatefulSet"           (namespaced)
//!                        key  = namespace 0x00 name
//!                        value = the object's JSON document
//! ```
//!
//! One tree per kind keeps each kind's keys apart without a prefix. Keys sort bytewise as
//! (namespace, name) because no namespace contains a NUL, so a full scan lists in the order the
//! `Store` contract asks for, and `namespace 0x00` is the prefix of one namespace.
//!
//! Version 1 had no journal (every write went into sled and was flushed there); it opens as a
//! version 2 store with an empty journal, and its record is rewritten. A release that reads
//! version 1 only refuses a version 2 store, since it would not replay the journal.

use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ipam_core::{Kind, ObjectKey};

use crate::error::OpenError;

/// The schema version this build reads and writes. Bump it on any change to the layout above
/// (tree names, key encoding, value encoding) and say how to migrate.
pub const SCHEMA_VERSION: u32 = 2;

/// The schema versions this build opens by rewriting their record: 1 is 2 without the journal,
/// so a store of version 1 is one of version 2 whose journal is empty.
const MIGRATES_FROM: &[&str] = &["1"];

/// The key of the schema record in sled's default tree.
pub(crate) const SCHEMA_KEY: &[u8] = b"berth-schema";

/// The sled database's directory inside the data dir.
pub(crate) const DB_DIR: &str = "db";

/// How long `open` retries sled's own lock once it holds the lock file. Only a store of this
/// process that is closing can hold it then: dropping a sled `Db` does not wait for sled's
/// background threads, which keep `db/db` locked briefly (spacejam/sled#1234, #1289).
const SLED_LOCK_GRACE: Duration = Duration::from_secs(5);

/// The name of the tree holding `kind`.
pub(crate) fn tree_name(kind: Kind) -> &'static str {
    kind.name()
}

/// The sled key of an object, or `None` for a key that no stored object can have (a namespace
/// on a cluster-scoped kind, none on a namespaced kind, or a NUL in the namespace).
pub(crate) fn encode_key(key: &ObjectKey) -> Option<Vec<u8>> {
    match (&key.namespace, key.kind.is_namespaced()) {
        (None, false) => Some(key.name.as_bytes().to_vec()),
        (Some(ns), true) => {
            let mut k = namespace_prefix(ns)?;
            k.extend_from_slice(key.name.as_bytes());
            Some(k)
        }
        _ => None,
    }
}

/// The object key of a sled key of `kind` (the inverse of [`encode_key`]), for messages.
pub(crate) fn decode_key(kind: Kind, sled_key: &[u8]) -> ObjectKey {
    let text = String::from_utf8_lossy(sled_key);
    match text.split_once('\0') {
        Some((ns, name)) if kind.is_namespaced() => ObjectKey::namespaced(kind, ns, name),
        _ => ObjectKey::cluster(kind, text),
    }
}

/// The key prefix of every object in namespace `ns`, `None` if `ns` contains a NUL.
pub(crate) fn namespace_prefix(ns: &str) -> Option<Vec<u8>> {
    if ns.contains('\0') {
        return None;
    }
    let mut k = Vec::with_capacity(ns.len() + 1);
    k.extend_from_slice(ns.as_bytes());
    k.push(0);
    Some(k)
}

/// Opens the sled database at `path`, retrying while a closing store of this process still
/// holds sled's lock.
pub(crate) fn open_db(path: &Path) -> Result<sled::Db, OpenError> {
    let deadline = Instant::now() + SLED_LOCK_GRACE;
    let mut pause = Duration::from_millis(2);
    loop {
        // sled is synced by checkpoints (the journal makes each write durable), so its periodic
        // flusher would only add writes we did not ask for: off (and one thread less).
        let config = sled::Config::new().path(path).flush_every_ms(None);
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Corruption { .. }) if discard_partial_snapshots(path)? => continue,
            Err(e) if is_lock_contention(&e) && Instant::now() < deadline => {
                tracing::debug!(db = %path.display(), "sled lock still held; retrying");
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(OpenError::Sled {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Removes the snapshot files sled left half-written; whether there were any.
///
/// sled 0.34.7 writes a snapshot while it opens (when the log advanced past the last one) into
/// `snap.<lsn>.generating`, syncs it and renames it to `snap.<lsn>`. But when it looks for the
/// latest snapshot it takes every `snap.*` file, the `.generating` ones included, and the name
/// of one sorts last: a process killed while opening the store (a CNI plugin that timed out,
/// say) leaves a file that makes every later open fail with `Corruption` (spacejam/sled#1527,
/// #1533). The file is by construction not a snapshot yet — the previous one and the log are
/// intact — so it is removed, with a warning, and the open tried again.
fn discard_partial_snapshots(path: &Path) -> Result<bool, OpenError> {
    let io_error = |e| OpenError::Sled {
        path: path.to_path_buf(),
        source: sled::Error::Io(e),
    };
    let mut discarded = false;
    for entry in std::fs::read_dir(path).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(),
                "removing a snapshot sled left half-written (a process died while opening the store)");
            std::fs::remove_file(entry.path()).map_err(io_error)?;
            discarded = true;
        }
    }
    Ok(discarded)
}

/// Whether sled failed because its file lock is held. sled 0.34.7 (`Config::open_file`) reports
/// that only as a formatted message in an `io::ErrorKind::Other`; there is no other way to tell
/// (NLnetLabs/routinator#548), so this is the one place that reads an error string.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == io::ErrorKind::Other
        && io.to_string().contains("could not acquire lock"))
}

/// Checks the schema record, writing it into an empty database.
pub(crate) fn check_schema(db: &sled::Db, dir: &Path) -> Result<(), OpenError> {
    let sled_error = |source| OpenError::Sled {
        path: dir.join(DB_DIR),
        source,
    };
    match db.get(SCHEMA_KEY).map_err(sled_error)? {
        Some(found) if *found == *SCHEMA_VERSION.to_string().as_bytes() => Ok(()),
        Some(found) if MIGRATES_FROM.iter().any(|v| *found == *v.as_bytes()) => {
            tracing::info!(dir = %dir.display(), from = %String::from_utf8_lossy(&found),
                to = SCHEMA_VERSION, "migrating the store's schema");
            // Made durable with the rest of the layout when the store finishes opening.
            db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                .map_err(sled_error)?;
            Ok(())
        }
        Some(found) => Err(OpenError::SchemaMismatch {
            dir: dir.to_path_buf(),
            found: String::from_utf8_lossy(&found).into_owned(),
        }),
        None => {
            if !is_empty(db).map_err(sled_error)? {
                return Err(OpenError::NotABerthStore {
                    dir: dir.to_path_buf(),
                });
            }
            // Made durable with the rest of the layout when the store finishes opening.
            db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                .map_err(sled_error)?;
            Ok(())
        }
    }
}

/// Whether no tree of `db` holds a key.
fn is_empty(db: &sled::Db) -> sled::Result<bool> {
    for name in db.tree_names() {
        if !db.open_tree(name)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_namespace_then_name() {
        let ep = |ns: &str, name: &str| {
            encode_key(&ObjectKey::namespaced(Kind::SpiderEndpoint, ns, name)).unwrap()
        };
        let mut keys = [
            ep("ns2", "a"),
            ep("ns1", "b"),
            ep("ns", "z"),
            ep("ns1", "a"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                ep("ns", "z"),
                ep("ns1", "a"),
                ep("ns1", "b"),
                ep("ns2", "a")
            ]
        );
        assert!(ep("ns1", "b").starts_with(&namespace_prefix("ns1").unwrap()));
        assert!(!ep("ns10", "b").starts_with(&namespace_prefix("ns1").unwrap()));
    }

    #[test]
    fn impossible_keys_have_no_encoding() {
        let pool_in_ns = ObjectKey::namespaced(Kind::SpiderIPPool, "ns", "p");
        let ep_without_ns = ObjectKey::cluster(Kind::SpiderEndpoint, "e");
        let nul_ns = ObjectKey::namespaced(Kind::SpiderEndpoint, "a\0b", "e");
        assert_eq!(encode_key(&pool_in_ns), None);
        assert_eq!(encode_key(&ep_without_ns), None);
        assert_eq!(encode_key(&nul_ns), None);
        assert_eq!(
            encode_key(&ObjectKey::cluster(Kind::SpiderIPPool, "p")),
            Some(b"p".to_vec())
        );
    }

    #[test]
    fn keys_decode_to_what_they_encode() {
        for key in [
            ObjectKey::cluster(Kind::SpiderIPPool, "p"),
            ObjectKey::namespaced(Kind::SpiderEndpoint, "ns", "e"),
            ObjectKey::namespaced(Kind::StatefulSet, "ns", "with\0nul"),
        ] {
            assert_eq!(decode_key(key.kind, &encode_key(&key).unwrap()), key);
        }
    }
}
