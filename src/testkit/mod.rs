//! Test kit: code that only tests, fuzz targets, examples and benchmarks use. It is compiled only
//! with the `testkit` feature (which the tests and examples turn on through the dev-dependency on
//! this package) or for the library's own unit tests, never into a release `grasp-sync` binary.

pub mod flood;
pub mod fuzz_checks;
pub mod generate;
