//! Replays the fuzz corpora (`fuzz/corpus/{ip_ranges,annotations}/`) through the same property
//! checks the fuzz targets run, so every seed and every input the fuzzer kept is a test.

use std::panic::catch_unwind;
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: failing inputs {failed:#?}");
}

#[test]
fn ip_ranges_corpus() {
    replay("ip_ranges", ipam_core::fuzzing::check_ip_ranges);
}

#[test]
fn annotations_corpus() {
    replay("annotations", ipam_core::fuzzing::check_annotations);
}
