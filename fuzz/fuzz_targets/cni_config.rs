//! Fuzz target: the CNI config on stdin, the `CNI_*` environment and `CNI_ARGS`, and the whole invocation.
//! The input format and the properties are documented on `cni_plugin::fuzzing::check_cni_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cni_plugin::fuzzing::check_cni_config(data));
