//! Replays every committed fuzz seed (`fuzz/corpus/<target>/`) and every fixed crash reproducer
//! (`fuzz/regressions/<target>/`) through the same checks the fuzz targets run, on the stable
//! toolchain, so a regression shows up in a plain `cargo test`.

use std::path::{Path, PathBuf};

use grasp_sync::testkit::fuzz_checks::{run, TARGETS};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// Runs every file under `fuzz/<kind>/<target>/`; returns how many ran.
fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    let mut ran = 0;
    if let Ok(dirs) = std::fs::read_dir(&root) {
        for dir in dirs {
            let dir = dir.unwrap().path();
            let target = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(TARGETS.iter().any(|(t, _)| *t == target), "{} names no fuzz target", dir.display());
        }
    }
    for (target, _) in TARGETS {
        for file in files(&root.join(target)) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(target, &data));
            assert!(matches!(outcome, Ok(true)), "{target}: {} fails its check", file.display());
            ran += 1;
        }
    }
    ran
}

#[test]
fn every_committed_seed_passes_its_fuzz_check() {
    let ran = replay("corpus");
    assert!(ran >= TARGETS.len(), "only {ran} seed files found");
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        assert!(!files(&dir).is_empty(), "no seeds for {target}");
    }
}

#[test]
fn every_fixed_crash_reproducer_passes_its_fuzz_check() {
    replay("regressions");
}
