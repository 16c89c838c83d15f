//! Replays the fuzz corpora (`fuzz/corpus/{cni_config,cni_result}/`) through the same property
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
fn cni_config_corpus() {
    replay("cni_config", cni_plugin::fuzzing::check_cni_config);
}

#[test]
fn cni_result_corpus() {
    replay("cni_result", cni_plugin::fuzzing::check_cni_result);
}
