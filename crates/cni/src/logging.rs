//! Where a plugin logs: `tracing` to a file, never to stdout.
//!
//! stdout of a CNI plugin carries the result and nothing else, so the subscriber writes to a
//! file the config names: parent dirs created, appended to with one `write` per record so
//! that concurrent plugin processes do not interleave inside a line, and kept to a size by
//! [`Rotation`] in a way that holds while many plugin processes write the file at once
//! ([`rotating`]). When the file cannot be opened, or there is no config to name one
//! (VERSION, unreadable stdin), logs go to stderr, which runtimes collect. [`level_filter`] reads a level the way Spiderpool's `log_level`
//! is written (`DEBUG`, `INFO`, `WARN`/`WARNING`, `ERROR`, `TRACE`, `OFF`; any case),
//! [`DEFAULT_LEVEL`] when absent or unknown.

pub mod rotating;

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;

pub use rotating::{RotatingFile, Rotation};

/// The level when the config sets no (or no known) `log_level`.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// The level a `log_level` value names; [`DEFAULT_LEVEL`] when `None` or unknown.
pub fn level_filter(level: Option<&str>) -> LevelFilter {
    match level.map(|l| l.trim().to_ascii_uppercase()).as_deref() {
        Some("TRACE") => LevelFilter::TRACE,
        Some("DEBUG") => LevelFilter::DEBUG,
        Some("INFO") => LevelFilter::INFO,
        Some("WARN" | "WARNING") => LevelFilter::WARN,
        Some("ERROR" | "FATAL" | "PANIC") => LevelFilter::ERROR,
        Some("OFF" | "NONE") => LevelFilter::OFF,
        _ => DEFAULT_LEVEL,
    }
}

/// Where the installed subscriber writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The file asked for.
    File(std::path::PathBuf),
    /// stderr, because the file could not be opened (the reason is the first log line).
    Stderr,
    /// A subscriber was already installed in this process; nothing changed.
    AlreadySet,
}

/// Installs the process-wide subscriber: `level` and up to `path` (or stderr when the file
/// cannot be opened), rotated by the default [`Rotation`]. Call it once, early; later calls
/// change nothing.
pub fn init_file_logging(path: &Path, level: LevelFilter) -> LogTarget {
    init_file_logging_with(path, level, Rotation::default())
}

/// [`init_file_logging`] with the given [`Rotation`].
pub fn init_file_logging_with(path: &Path, level: LevelFilter, rotation: Rotation) -> LogTarget {
    match RotatingFile::open(path, rotation) {
        Ok(file) => {
            let installed = tracing_subscriber::fmt()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_max_level(level)
                .try_init();
            match installed {
                Ok(()) => LogTarget::File(path.to_path_buf()),
                Err(_) => LogTarget::AlreadySet,
            }
        }
        Err(err) => match init_stderr_logging(level) {
            LogTarget::Stderr => {
                tracing::warn!(path = %path.display(), error = %err, "cannot open the log file; logging to stderr");
                LogTarget::Stderr
            }
            other => other,
        },
    }
}

/// Installs the process-wide subscriber writing `level` and up to stderr. Later calls
/// change nothing.
pub fn init_stderr_logging(level: LevelFilter) -> LogTarget {
    let installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .try_init();
    match installed {
        Ok(()) => LogTarget::Stderr,
        Err(_) => LogTarget::AlreadySet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_filter(Some("DEBUG")), LevelFilter::DEBUG);
        assert_eq!(level_filter(Some("debug")), LevelFilter::DEBUG);
        assert_eq!(level_filter(Some("WARNING")), LevelFilter::WARN);
        assert_eq!(level_filter(Some(" error ")), LevelFilter::ERROR);
        assert_eq!(level_filter(Some("loud")), DEFAULT_LEVEL);
        assert_eq!(level_filter(None), DEFAULT_LEVEL);
    }
}
