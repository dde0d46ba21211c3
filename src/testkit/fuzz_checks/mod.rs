//! Property checks over untrusted input, shared by the cargo-fuzz targets in `fuzz/` and by the
//! corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! Each `check` function takes arbitrary bytes, drives one input-facing part of the program and
//! panics when an invariant fails (not only when the code under test panics). They are plain
//! functions so that every committed corpus file and every crash reproducer also runs under a
//! normal `cargo test`.

pub mod announce;
pub mod negentropy;
pub mod plugin;
pub mod relay;

/// A check: panics when an invariant fails for this input.
pub type Check = fn(&[u8]);

/// Target name → check, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[(&str, Check)] = &[
    ("plugin_line", plugin::check),
    ("relay_message", relay::check),
    ("negentropy", negentropy::check),
    ("announcement", announce::check),
];

/// Runs the check named `target` on `data`; `false` when there is no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(name, _)| *name == target) {
        Some((_, check)) => {
            check(data);
            true
        }
        None => false,
    }
}
