//! Fuzz target: the `ipam.spidernet.io/*` and Multus annotations of a pod.
//! The input format and the properties are documented on `ipam_core::fuzzing::check_annotations`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipam_core::fuzzing::check_annotations(data));
