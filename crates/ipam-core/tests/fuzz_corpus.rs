//! Replays the fuzz corpora (`fuzz/corpus/{ip_ranges,annotations}/`) through the same property
//! checks the fuzz targets run, so every seed and every input the fuzzer kept is a test.

fn replay(target: &str, check: fn(&[u8])) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ipam_core::fuzzing::replay_corpus(&root, target, check);
}

#[test]
fn ip_ranges_corpus() {
    replay("ip_ranges", ipam_core::fuzzing::check_ip_ranges);
}

#[test]
fn annotations_corpus() {
    replay("annotations", ipam_core::fuzzing::check_annotations);
}
