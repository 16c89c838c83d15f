//! A log file that many processes append to at once, kept to a size: [`RotatingFile`].
//!
//! A CNI plugin runs as one short-lived process per call, and every one of them appends to
//! the same file. A rotating writer that assumes it is the only writer (it counts the bytes
//! it wrote, renames when its count is over) goes wrong there: two processes rotate the same
//! file one after the other and the second pushes an almost empty file into the backups, or
//! a process keeps appending to a file that another one already renamed — and later deleted.
//!
//! So every line is appended under an exclusive `flock` on a sidecar file `<file>.lock`,
//! which is never renamed (the log file itself is, so a lock on it would not exclude a
//! process that opened the new file from one still holding the old). Under the lock:
//!
//! 1. if the path no longer names the file this process has open (same device and inode) —
//!    another process rotated it, or `logrotate` moved it — the path is opened again;
//! 2. if the line would take the file past [`Rotation::max_bytes`] and the file is not
//!    empty, the file is rotated: the backups `<file>.1` … shift up by one, those past
//!    [`Rotation::max_backups`] are deleted, `<file>` becomes `<file>.1`, a new `<file>` is
//!    opened, and backups last written longer ago than [`Rotation::max_age`] are deleted;
//! 3. the line is appended with one `write` (`O_APPEND`).
//!
//! Since the size is read under the lock from the file the path names, a generation is
//! rotated once, by the first process that finds it full; the others see the new file. No
//! process ever writes to a renamed file, so none writes to a backup that is being deleted:
//! no line is lost, none is torn, every file stays within `max_bytes` (a single line longer
//! than that gets a file of its own). The cost is two `flock` calls and one `stat` per line.
//!
//! A path that is not a regular file (`/dev/stderr`, a pipe) is written as is: no lock file
//! next to it, no rotation. When the lock file cannot be opened or locked (a read-only
//! directory, a file system without locks), lines are appended unlocked and unrotated. When
//! a rotation fails, the line still goes to the current file, and the failure is reported
//! on stderr once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One mebibyte: the unit of `log_file_max_size`, as in lumberjack, which Spiderpool uses.
pub const MIB: u64 = 1024 * 1024;

/// One day: the unit of `log_file_max_age`.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How big a log file grows and which backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A line that would take the file past this many bytes goes to a new file.
    pub max_bytes: u64,
    /// Backups kept: `<file>.1` (the newest) to `<file>.<max_backups>`; 0 keeps none.
    pub max_backups: u64,
    /// Backups last written longer ago than this are deleted when the file rotates.
    pub max_age: Duration,
}

impl Rotation {
    /// `log_file_max_size` when the config sets none: 10 MiB, about 35 000 calls at one INFO
    /// line each (Spiderpool's 100 MB is a lot for one plugin's log on every node).
    pub const DEFAULT_MAX_SIZE_MB: u64 = 10;
    /// `log_file_max_age` when the config sets none: 30 days, Spiderpool's default.
    pub const DEFAULT_MAX_AGE_DAYS: u64 = 30;
    /// `log_file_max_count` when the config sets none: 5 backups, so at most 60 MiB in all.
    pub const DEFAULT_MAX_COUNT: u64 = 5;

    /// Rotation by Spiderpool's three keys: size in MiB, age in days, count of backups.
    /// `None` and 0 give the default (Go's `omitempty` integers cannot tell 0 from unset).
    pub fn from_limits(
        max_size_mb: Option<u64>,
        max_age_days: Option<u64>,
        max_count: Option<u64>,
    ) -> Rotation {
        let or = |v: Option<u64>, default: u64| v.filter(|v| *v != 0).unwrap_or(default);
        Rotation {
            max_bytes: or(max_size_mb, Self::DEFAULT_MAX_SIZE_MB).saturating_mul(MIB),
            max_age: Duration::from_secs(
                or(max_age_days, Self::DEFAULT_MAX_AGE_DAYS).saturating_mul(DAY.as_secs()),
            ),
            max_backups: or(max_count, Self::DEFAULT_MAX_COUNT),
        }
    }
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation::from_limits(None, None, None)
    }
}

/// An append-only log file shared with other processes, rotated by [`Rotation`] (see the
/// [module docs](self)). Each [`write`](Write::write) is one line (one log record) and is
/// written whole.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    /// Device and inode of `file`.
    id: (u64, u64),
    /// `<path>.lock`; `None` when `path` is not a regular file or the lock file cannot be
    /// opened.
    lock: Option<File>,
    /// A rotation failure was reported on stderr already.
    reported: bool,
}

impl RotatingFile {
    /// Opens `path` for appending (creating it and its parent directories) and its lock file.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let meta = file.metadata()?;
        let lock = if meta.file_type().is_file() {
            open_append(&lock_path(path)).ok()
        } else {
            None
        };
        Ok(RotatingFile {
            path: path.to_path_buf(),
            rotation,
            file,
            id: (meta.dev(), meta.ino()),
            lock,
            reported: false,
        })
    }

    /// The path written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` whole, rotating first when it would take the file past the bound.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(lock) = self.lock.take() else {
            return self.file.write_all(line);
        };
        let written = match lock.lock() {
            Ok(()) => {
                let written = self.append_locked(line);
                // Closing would release it too; the lock file stays open for the next line.
                let _ = lock.unlock();
                written
            }
            Err(_) => self.file.write_all(line),
        };
        self.lock = Some(lock);
        written
    }

    fn append_locked(&mut self, line: &[u8]) -> io::Result<()> {
        let size = match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => Some(meta.len()),
            // Moved or deleted: by another process's rotation, or by logrotate.
            _ => self.reopen().ok(),
        };
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if let Some(size) = size
            && size > 0
            && size.saturating_add(len) > self.rotation.max_bytes
            && let Err(err) = self.rotate()
        {
            self.report(&err);
        }
        self.file.write_all(line)
    }

    /// Opens the path again; its size.
    fn reopen(&mut self) -> io::Result<u64> {
        let file = open_append(&self.path)?;
        let meta = file.metadata()?;
        self.file = file;
        self.id = (meta.dev(), meta.ino());
        Ok(meta.len())
    }

    /// Shifts the backups, moves the file to `<file>.1`, opens a new one, prunes by age.
    /// Called with the lock held.
    fn rotate(&mut self) -> io::Result<()> {
        let max = self.rotation.max_backups;
        let mut backups = self.backups()?;
        // Highest first, so that `n + 1` is free when `n` moves there; those that would go
        // past the count are deleted first, so that there are never more than `max`.
        backups.sort_by_key(|b| std::cmp::Reverse(b.0));
        for (n, path) in &backups {
            if *n >= max {
                remove(path)?;
            } else {
                fs::rename(path, self.backup(n + 1))?;
            }
        }
        if max > 0 {
            fs::rename(&self.path, self.backup(1))?;
        } else {
            remove(&self.path)?;
        }
        self.reopen()?;
        if let Some(oldest) = SystemTime::now().checked_sub(self.rotation.max_age) {
            for (_, path) in self.backups()? {
                if fs::metadata(&path)?.modified()? < oldest {
                    remove(&path)?;
                }
            }
        }
        Ok(())
    }

    /// The backups that exist: `<file>.<n>` for n ≥ 1, written the way [`Self::backup`]
    /// writes them (no sign, no leading zero).
    fn backups(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let (dir, name) = self.dir_and_name();
        let prefix = format!("{name}.");
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(n) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|suffix| {
                    suffix
                        .parse::<u64>()
                        .ok()
                        .filter(|n| n.to_string() == suffix)
                })
            else {
                continue;
            };
            if n >= 1 {
                found.push((n, entry.path()));
            }
        }
        Ok(found)
    }

    fn backup(&self, n: u64) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        name.into()
    }

    fn dir_and_name(&self) -> (&Path, String) {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (dir, name)
    }

    /// Reports a rotation failure on stderr, once per process: the log itself is where it
    /// failed, and the runtime collects a plugin's stderr.
    fn report(&mut self, err: &io::Error) {
        if !self.reported {
            self.reported = true;
            eprintln!("cannot rotate the log file {}: {err}", self.path.display());
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `<path>.lock`: the file every writer of `path` locks.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    name.into()
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Deletes `path`; already gone is fine.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(max_bytes: u64, max_backups: u64) -> Rotation {
        Rotation {
            max_bytes,
            max_backups,
            max_age: DAY,
        }
    }

    /// `(name, content)` of every file in `dir`, sorted by name.
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    }

    fn write_lines(log: &mut RotatingFile, lines: impl IntoIterator<Item = u32>) {
        for i in lines {
            log.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
        }
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(
            Rotation::default(),
            Rotation {
                max_bytes: 10 * MIB,
                max_backups: 5,
                max_age: 30 * DAY,
            }
        );
        assert_eq!(
            Rotation::from_limits(Some(100), Some(7), Some(10)),
            Rotation {
                max_bytes: 100 * MIB,
                max_backups: 10,
                max_age: 7 * DAY,
            }
        );
        assert_eq!(
            Rotation::from_limits(Some(0), Some(0), Some(0)),
            Rotation::default()
        );
        assert_eq!(
            Rotation::from_limits(Some(u64::MAX), None, None).max_bytes,
            u64::MAX
        );
    }

    #[test]
    fn a_line_that_would_pass_the_bound_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        // Each line is 8 bytes: three fit in 24, a fourth goes to a new file.
        let mut log = RotatingFile::open(&path, rotation(24, 10)).unwrap();
        write_lines(&mut log, 0..7);
        assert_eq!(
            files(dir.path()),
            [
                ("x.log".into(), "line 06\n".into()),
                ("x.log.1".into(), "line 03\nline 04\nline 05\n".into()),
                ("x.log.2".into(), "line 00\nline 01\nline 02\n".into()),
                ("x.log.lock".into(), String::new()),
            ]
        );
    }

    #[test]
    fn a_line_longer_than_the_bound_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingFile::open(&path, rotation(10, 10)).unwrap();
        log.write_all(b"short\n").unwrap();
        log.write_all(b"a line of twenty-two\n").unwrap();
        log.write_all(b"a line of twenty-two\n").unwrap();
        log.write_all(b"short\n").unwrap();
        assert_eq!(
            files(dir.path()),
            [
                ("x.log".into(), "short\n".into()),
                ("x.log.1".into(), "a line of twenty-two\n".into()),
                ("x.log.2".into(), "a line of twenty-two\n".into()),
                ("x.log.3".into(), "short\n".into()),
                ("x.log.lock".into(), String::new()),
            ]
        );
    }

    #[test]
    fn only_max_backups_are_kept_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingFile::open(&path, rotation(16, 2)).unwrap();
        write_lines(&mut log, 0..9);
        assert_eq!(
            files(dir.path()),
            [
                ("x.log".into(), "line 08\n".into()),
                ("x.log.1".into(), "line 06\nline 07\n".into()),
                ("x.log.2".into(), "line 04\nline 05\n".into()),
                ("x.log.lock".into(), String::new()),
            ]
        );
        // No backups at all: the full file is dropped.
        let mut none = RotatingFile::open(&dir.path().join("y.log"), rotation(16, 0)).unwrap();
        write_lines(&mut none, 0..5);
        assert_eq!(
            fs::read_to_string(dir.path().join("y.log")).unwrap(),
            "line 04\n"
        );
        assert!(!dir.path().join("y.log.1").exists());
    }

    #[test]
    fn backups_older_than_max_age_are_deleted_at_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut log = RotatingFile::open(&path, rotation(16, 10)).unwrap();
        write_lines(&mut log, 0..6);
        // x.log.1 = 2, 3; x.log.2 = 0, 1. Age x.log.2 past the limit, x.log.1 just below.
        let now = SystemTime::now();
        let age = |name: &str, by: Duration| {
            File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap()
                .set_modified(now - by)
                .unwrap();
        };
        age("x.log.2", DAY + Duration::from_secs(60));
        age("x.log.1", DAY - Duration::from_secs(60));
        // Ages are looked at only when the file rotates.
        assert!(dir.path().join("x.log.2").exists());
        write_lines(&mut log, 6..7);
        let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x.log", "x.log.1", "x.log.2", "x.log.lock"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("x.log.2")).unwrap(),
            "line 02\nline 03\n"
        );
    }

    #[test]
    fn a_file_moved_away_by_another_writer_is_reopened_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut a = RotatingFile::open(&path, rotation(1000, 10)).unwrap();
        let mut b = RotatingFile::open(&path, rotation(1000, 10)).unwrap();
        a.write_all(b"a1\n").unwrap();
        b.write_all(b"b1\n").unwrap();
        // logrotate (or anyone) moves the file; both writers follow the path.
        fs::rename(&path, dir.path().join("moved")).unwrap();
        a.write_all(b"a2\n").unwrap();
        b.write_all(b"b2\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("moved")).unwrap(),
            "a1\nb1\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a2\nb2\n");
        // A deleted file is created again.
        fs::remove_file(&path).unwrap();
        a.write_all(b"a3\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a3\n");
    }

    #[test]
    fn two_writers_rotate_each_generation_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut a = RotatingFile::open(&path, rotation(16, 10)).unwrap();
        let mut b = RotatingFile::open(&path, rotation(16, 10)).unwrap();
        // Both opened the same file; whichever writes after it is full rotates it, the
        // other finds the new file and does not rotate again.
        for i in 0..5 {
            let w = if i % 2 == 0 { &mut a } else { &mut b };
            w.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        assert_eq!(
            files(dir.path()),
            [
                ("x.log".into(), "line 04\n".into()),
                ("x.log.1".into(), "line 02\nline 03\n".into()),
                ("x.log.2".into(), "line 00\nline 01\n".into()),
                ("x.log.lock".into(), String::new()),
            ]
        );
    }

    #[test]
    fn backups_with_gaps_and_strangers_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        for (name, content) in [
            ("x.log.1", "one\n"),
            ("x.log.3", "three\n"),
            ("x.log.03", "not a backup\n"),
            ("x.log.old", "not a backup\n"),
            ("y.log.1", "another log\n"),
        ] {
            fs::write(dir.path().join(name), content).unwrap();
        }
        let mut log = RotatingFile::open(&path, rotation(8, 3)).unwrap();
        write_lines(&mut log, 0..2);
        assert_eq!(
            files(dir.path()),
            [
                ("x.log".into(), "line 01\n".into()),
                ("x.log.03".into(), "not a backup\n".into()),
                ("x.log.1".into(), "line 00\n".into()),
                ("x.log.2".into(), "one\n".into()),
                ("x.log.lock".into(), String::new()),
                ("x.log.old".into(), "not a backup\n".into()),
                ("y.log.1".into(), "another log\n".into()),
            ]
        );
    }

    #[test]
    fn a_path_that_is_not_a_regular_file_is_written_as_is() {
        let mut null = RotatingFile::open(Path::new("/dev/null"), rotation(1, 1)).unwrap();
        null.write_all(b"gone\n").unwrap();
        null.write_all(b"gone\n").unwrap();
        assert!(null.lock.is_none());
        assert!(!Path::new("/dev/null.lock").exists());
    }
}
