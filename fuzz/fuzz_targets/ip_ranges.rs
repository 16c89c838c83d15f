//! Fuzz target: Spiderpool IP entries (`a-b`, `a`, `net/len`) and the IP set algebra.
//! The input format and the properties are documented on `ipam_core::fuzzing::check_ip_ranges`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipam_core::fuzzing::check_ip_ranges(data));
