//! The write-ahead journal: what makes a write durable, in one `fdatasync` of one small file.
//!
//! A write is a set of [`Change`]s (a key of a tree set to a value, or removed). Under the
//! store's write lock it is encoded as one *record* into a buffer in memory and applied to the
//! overlay (`overlay.rs`); a sync (the group commit leader, `commit.rs`) appends the buffer to
//! the current journal file and `fdatasync`s it. sled is written later, in bulk, by a
//! *checkpoint* (`store/checkpoint.rs`), which then removes the journal files it covered.
//!
//! Files: `<data dir>/journal/<generation>`, a 20-digit decimal number. Appends go to the
//! newest. A checkpoint starts a new generation first; the older files are removed once sled
//! holds everything in them, durably. Opening replays every file, oldest first.
//!
//! ```text
//! record  = len u32 LE | crc32(payload) u32 LE | payload          (len = payload length)
//! payload = seq u64 LE | count u32 LE | change{count}
//! change  = tree-name len u8 | tree name | key len u32 LE | key | 0 (removed)
//!         | tree-name len u8 | tree name | key len u32 LE | key | 1 | value len u32 LE | value
//! ```
//!
//! A crash can leave the newest file with a torn record at its end (a write that never
//! returned): opening keeps the records before it and cuts the file there. A damaged record
//! anywhere else means the disk lost synced data: opening fails and names the file and offset.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipam_core::Kind;

use crate::error::OpenError;

/// The journal's directory inside the data dir.
pub(crate) const JOURNAL_DIR: &str = "journal";

/// Bytes of a record's header (length and checksum).
const HEADER: usize = 8;

/// A record longer than this is damage, not data (no write is near it: the largest pool
/// document is a few MiB).
const MAX_RECORD: usize = 1 << 30;

/// One key of one tree set to a value, or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: Kind,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<sled::IVec>,
}

impl Change {
    pub(crate) fn put(kind: Kind, key: impl Into<Vec<u8>>, value: impl Into<sled::IVec>) -> Self {
        Change {
            kind,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    pub(crate) fn remove(kind: Kind, key: impl Into<Vec<u8>>) -> Self {
        Change {
            kind,
            key: key.into(),
            value: None,
        }
    }
}

/// A record read back at open: a write's sequence number and its changes.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) changes: Vec<Change>,
}

/// The open journal.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    /// Records encoded since the last sync took the buffer.
    pending: Mutex<Vec<u8>>,
    /// The file appends go to. Held by a sync across its write and `fdatasync`, and by a
    /// rotation; taken before `pending` when both are.
    active: Mutex<Active>,
    /// Bytes in the journal files, synced or not: what a checkpoint would take off.
    size: AtomicU64,
    /// A failed `fdatasync`, or a failed write whose torn bytes could not be cut off: the
    /// file may have lost what it was given, so no later sync can promise durability.
    broken: AtomicBool,
}

#[derive(Debug)]
struct Active {
    generation: u64,
    file: File,
    /// The file's length: where the next append starts.
    len: u64,
}

impl Journal {
    /// Opens the journal of the data dir `data_dir` (creating its directory), cuts a torn
    /// record off the newest file, and returns the journal with every record in the files, in
    /// order.
    pub(crate) fn open(data_dir: &Path) -> Result<(Journal, Vec<Record>), OpenError> {
        let dir = data_dir.join(JOURNAL_DIR);
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Journal { path, source }
        };
        if !dir.is_dir() {
            std::fs::create_dir(&dir).map_err(io_error(&dir))?;
            sync_dir(data_dir).map_err(io_error(data_dir))?;
        }
        let generations = generations(&dir).map_err(io_error(&dir))?;
        let mut records = Vec::new();
        let mut size = 0;
        for (i, &generation) in generations.iter().enumerate() {
            let path = file_name(&dir, generation);
            let newest = i + 1 == generations.len();
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_error(&path))?;
            let (read, end) = match decode_all(&bytes) {
                Ok(read) => (read, bytes.len()),
                Err((read, offset, reason)) if newest => {
                    tracing::warn!(file = %path.display(), offset, %reason,
                        "cutting a torn record off the journal (a write that never returned)");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    f.set_len(offset as u64).map_err(io_error(&path))?;
                    f.sync_all().map_err(io_error(&path))?;
                    (read, offset)
                }
                Err((_, offset, reason)) => {
                    return Err(OpenError::JournalDamaged {
                        path,
                        offset: offset as u64,
                        reason,
                    });
                }
            };
            records.extend(read);
            size += end as u64;
        }
        let generation = generations.last().copied().unwrap_or(1);
        let active = Active::open(&dir, generation).map_err(io_error(&dir))?;
        Ok((
            Journal {
                dir,
                pending: Mutex::new(Vec::new()),
                active: Mutex::new(active),
                size: AtomicU64::new(size),
                broken: AtomicBool::new(false),
            },
            records,
        ))
    }

    /// Encodes the record of a write into the buffer the next sync writes. Call it under the
    /// store's write lock, so that records are in the order the writes landed.
    pub(crate) fn append(&self, seq: u64, changes: &[Change]) {
        let mut pending = lock(&self.pending);
        let before = pending.len();
        encode(&mut pending, seq, changes);
        self.size
            .fetch_add((pending.len() - before) as u64, Ordering::Relaxed);
    }

    /// Writes the buffered records to the current file and syncs it. Blocks on the disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut active = lock(&self.active);
        self.write_pending(&mut active)?;
        self.sync_file(&active)
    }

    /// Appends the buffered records to the current file. When that fails (a full disk), the
    /// file is cut back to where it was and the records go back to the head of the buffer,
    /// for the next sync to write again: a torn record left in the middle of the file would
    /// make the next open drop every record after it, those of writes that returned included.
    fn write_pending(&self, active: &mut Active) -> io::Result<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier write or sync of the journal failed; reopen the store",
            ));
        }
        let bytes = std::mem::take(&mut *lock(&self.pending));
        match active.file.write_all(&bytes) {
            Ok(()) => {
                active.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                {
                    let mut pending = lock(&self.pending);
                    let later = std::mem::replace(&mut *pending, bytes);
                    pending.extend_from_slice(&later);
                }
                if let Err(cut) = active.file.set_len(active.len) {
                    self.broken.store(true, Ordering::Release);
                    tracing::error!(error = %cut, "cannot cut a failed write off the journal");
                }
                Err(e)
            }
        }
    }

    /// `fdatasync` of the current file. A failure breaks the journal for good: the kernel may
    /// have dropped the pages it could not write, and a later sync would then succeed without
    /// them.
    fn sync_file(&self, active: &Active) -> io::Result<()> {
        active.file.sync_data().inspect_err(|_| {
            self.broken.store(true, Ordering::Release);
        })
    }

    /// Bytes in the journal files (synced or not).
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Makes every record so far durable in the current file, then starts a new file for the
    /// records to come. Returns the generation of the file it closed: once sled holds
    /// everything written so far, [`Self::remove_upto`] it. Call it under the store's write lock.
    pub(crate) fn rotate(&self) -> io::Result<u64> {
        let mut active = lock(&self.active);
        self.write_pending(&mut active)?;
        self.sync_file(&active)?;
        let closed = active.generation;
        *active = Active::open(&self.dir, closed + 1)?;
        sync_dir(&self.dir)?;
        self.size.store(0, Ordering::Relaxed);
        Ok(closed)
    }

    /// Removes the files up to generation `upto` (a checkpoint put what they hold into sled).
    pub(crate) fn remove_upto(&self, upto: u64) -> io::Result<()> {
        for generation in generations(&self.dir)? {
            if generation <= upto {
                std::fs::remove_file(file_name(&self.dir, generation))?;
            }
        }
        sync_dir(&self.dir)
    }
}

impl Active {
    fn open(dir: &Path, generation: u64) -> io::Result<Active> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_name(dir, generation))?;
        let len = file.metadata()?.len();
        Ok(Active {
            generation,
            file,
            len,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every holder leaves the data whole between statements: a panic leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn file_name(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}"))
}

/// The generations of the files in `dir`, oldest first. Other files are left alone.
fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 20
            && let Ok(generation) = name.parse::<u64>()
        {
            found.push(generation);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a journal field over 4 GiB");
    out.extend_from_slice(&n.to_le_bytes());
}

/// Appends the record of one write to `out`.
fn encode(out: &mut Vec<u8>, seq: u64, changes: &[Change]) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    put_u32(out, changes.len());
    for c in changes {
        let tree = c.kind.name().as_bytes();
        out.push(u8::try_from(tree.len()).expect("a kind name under 256 bytes"));
        out.extend_from_slice(tree);
        put_u32(out, c.key.len());
        out.extend_from_slice(&c.key);
        match &c.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_u32(out, v.len());
                out.extend_from_slice(v);
            }
        }
    }
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).expect("a journal record over 4 GiB");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Every record in `bytes`; on damage, the records before it, its offset and what is wrong.
#[allow(clippy::type_complexity)]
fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, (Vec<Record>, usize, String)> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match decode_one(&bytes[at..]) {
            Ok((record, used)) => {
                records.push(record);
                at += used;
            }
            Err(reason) => return Err((records, at, reason)),
        }
    }
    Ok(records)
}

/// The record at the start of `bytes` and its length in bytes.
fn decode_one(bytes: &[u8]) -> Result<(Record, usize), String> {
    let mut r = Reader(bytes);
    let len = r.u32().map_err(|_| "a short header".to_string())? as usize;
    let crc = r.u32().map_err(|_| "a short header".to_string())?;
    if len > MAX_RECORD {
        return Err(format!("a length of {len} bytes"));
    }
    let payload = r
        .take(len)
        .map_err(|_| format!("{len} bytes announced, {} there", bytes.len() - HEADER))?;
    if crc32fast::hash(payload) != crc {
        return Err("a checksum mismatch".into());
    }
    let record =
        decode_payload(payload).map_err(|e| format!("a payload that does not parse: {e}"))?;
    Ok((record, HEADER + len))
}

fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    let mut r = Reader(payload);
    let seq = r.u64()?;
    let count = r.u32()?;
    let mut changes = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let name_len = r.u8()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?).map_err(|e| e.to_string())?;
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("no kind {name:?}"))?;
        let key_len = r.u32()? as usize;
        let key = r.take(key_len)?.to_vec();
        let value = match r.u8()? {
            0 => None,
            1 => {
                let value_len = r.u32()? as usize;
                Some(sled::IVec::from(r.take(value_len)?))
            }
            tag => return Err(format!("a change tagged {tag}")),
        };
        changes.push(Change { kind, key, value });
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last change", r.0.len()));
    }
    Ok(Record { seq, changes })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Vec<Change> {
        vec![
            Change::put(Kind::SpiderIPPool, b"pool".to_vec(), &b"{\"a\":1}"[..]),
            Change::remove(Kind::SpiderIPPool, b"pool\x0010.0.0.1".to_vec()),
            Change::put(Kind::SpiderEndpoint, b"ns\x00pod".to_vec(), &b"{}"[..]),
        ]
    }

    #[test]
    fn records_read_back_as_written() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 7, &changes());
        encode(&mut bytes, 8, &[]);
        let records = decode_all(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].seq, &records[0].changes), (7, &changes()));
        assert_eq!((records[1].seq, records[1].changes.len()), (8, 0));
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_caught_at_its_record() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 1, &changes());
        let first = bytes.len();
        encode(&mut bytes, 2, &changes());
        for cut in first + 1..bytes.len() {
            let (read, offset, _) = decode_all(&bytes[..cut]).unwrap_err();
            assert_eq!((read.len(), offset), (1, first), "cut at {cut}");
        }
        for i in first..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            let (read, offset, _) = decode_all(&damaged).unwrap_err();
            assert_eq!((read.len(), offset), (1, first), "byte {i} flipped");
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, records) = Journal::open(dir.path()).unwrap();
        assert!(records.is_empty());
        journal.append(1, &changes());
        journal.sync().unwrap();
        drop(journal);
        // A write torn by a crash: half of a second record.
        let path = file_name(&dir.path().join(JOURNAL_DIR), 1);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut torn = Vec::new();
        encode(&mut torn, 2, &changes());
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);

        let (journal, records) = Journal::open(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        journal.append(3, &changes());
        journal.sync().unwrap();
        drop(journal);
        let (_, records) = Journal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 3]);
    }

    #[test]
    fn damage_in_an_older_file_fails_the_open_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(1, &changes());
        let closed = journal.rotate().unwrap();
        journal.append(2, &changes());
        journal.sync().unwrap();
        drop(journal);
        let old = file_name(&dir.path().join(JOURNAL_DIR), closed);
        let mut bytes = std::fs::read(&old).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&old, bytes).unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&old.display().to_string()) && err.contains("byte 0"),
            "{err}"
        );
    }

    #[test]
    fn rotation_keeps_order_across_files_and_removal_drops_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(1, &changes());
        let closed = journal.rotate().unwrap();
        assert_eq!(journal.size(), 0);
        journal.append(2, &changes());
        journal.sync().unwrap();
        assert!(journal.size() > 0);
        drop(journal);
        let (journal, records) = Journal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2]);
        journal.remove_upto(closed).unwrap();
        drop(journal);
        let (_, records) = Journal::open(dir.path()).unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2]);
    }
}
