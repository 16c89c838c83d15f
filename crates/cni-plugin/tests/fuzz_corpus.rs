//! Replays the fuzz corpora (`fuzz/corpus/{cni_config,cni_result}/`) through the same property
//! checks the fuzz targets run, so every seed and every input the fuzzer kept is a test.

fn replay(target: &str, check: fn(&[u8])) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ipam_core::fuzzing::replay_corpus(&root, target, check);
}

#[test]
fn cni_config_corpus() {
    replay("cni_config", cni_plugin::fuzzing::check_cni_config);
}

#[test]
fn cni_result_corpus() {
    replay("cni_result", cni_plugin::fuzzing::check_cni_result);
}
