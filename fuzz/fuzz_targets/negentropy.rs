#![no_main]
//! Fuzz target: see `grasp_sync::testkit::fuzz_checks::negentropy` for the input format and the invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_sync::testkit::fuzz_checks::negentropy::check(data));
