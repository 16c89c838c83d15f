//! Fuzz target: a CNI result (ADD output, `prevResult`): parse, and write → read back in every version.
//! The input format and the properties are documented on `cni_plugin::fuzzing::check_cni_result`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cni_plugin::fuzzing::check_cni_result(data));
