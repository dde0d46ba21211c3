//! A clone of this repository must be all the tests, examples and scripts need: no file of the
//! project may refer to a path outside the repository (a folder beside the checkout, a home
//! directory, a path of one machine). This test reads every source, test, example, script and CI
//! file and fails on such a reference, naming the file and line.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Folders and files that are read. Fixtures and fuzz corpora are data, not references.
const SCANNED: &[&str] =
    &["src", "tests", "examples", "scripts", "fuzz/fuzz_targets", "fuzz/Cargo.toml", ".ci", "Cargo.toml", "benches"];
const SKIPPED_DIRS: &[&str] = &["tests/fixtures"];

/// First components of absolute paths that belong to one machine or person (a workspace, a home
/// directory, a mount), never to what a clone of the repository carries.
const MACHINE_ROOTS: &[&str] = &["work", "root", "home", "Users", "mnt", "media", "opt", "srv", "data"];

/// Whether `rel`, a relative path written in a file, leaves the repository when resolved from
/// `base` (a folder inside the repository, relative to its root).
fn leaves_repo(base: &Path, rel: &str) -> bool {
    let mut depth: Vec<&str> = base.iter().filter_map(|c| c.to_str()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return true;
                }
            }
            p => depth.push(p),
        }
    }
    false
}

/// Where a line leaves the repository, if it does. `dir` is the folder of the file, relative to
/// the repository root: a `#[path]` attribute resolves from it; any other relative path resolves
/// from the root (where tests, examples and scripts run).
fn escape_in_line(line: &str, dir: &Path, is_shell: bool) -> Option<String> {
    // A script's own way to its repository root stays inside it.
    let line = if is_shell { line.replace("\"$(dirname \"$0\")/..\"", "ROOT") } else { line.to_string() };
    for needle in ["$HOME", "~/", "shared/fixtures"] {
        if line.contains(needle) {
            return Some(format!("`{needle}` leaves the repository"));
        }
    }
    // A module's `#[path]` and a manifest's `path =` resolve from the file's own folder.
    let trimmed = line.trim_start();
    let from_dir = trimmed.starts_with("#[path") || trimmed.contains("path = \"");
    let base = if from_dir { dir } else { Path::new("") };
    // In code, paths are string literals (`..` alone is Rust syntax); in scripts, any word.
    let quoted: Vec<&str> = if is_shell { vec![line.as_str()] } else { line.split('"').skip(1).step_by(2).collect() };
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    for token in quoted.iter().flat_map(|q| q.split(|c: char| !is_path_char(c))) {
        let relative = token.trim_start_matches('/');
        if token.split('/').any(|p| p == "..") && leaves_repo(base, relative) {
            return Some(format!("`{token}` leaves the repository"));
        }
    }
    for (i, _) in line.match_indices(['"', '\'', ' ', '=', '(']) {
        let Some(rest) = line[i + 1..].strip_prefix('/') else { continue };
        let first: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        if MACHINE_ROOTS.contains(&first.as_str()) && rest[first.len()..].starts_with('/') {
            return Some(format!("absolute path `/{first}/…` is a path of one machine"));
        }
    }
    None
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let rel = dir.strip_prefix(ROOT).unwrap_or(dir).to_string_lossy().to_string();
    if SKIPPED_DIRS.contains(&rel.as_str()) {
        return;
    }
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        files(&e.path(), out);
    }
}

fn violations(path: &Path, text: &str) -> Vec<String> {
    let is_shell = text.starts_with("#!") || path.extension().is_none();
    let rel = path.strip_prefix(ROOT).unwrap_or(path);
    let dir = rel.parent().unwrap_or(Path::new(""));
    text.lines()
        .enumerate()
        .filter_map(|(n, l)| escape_in_line(l, dir, is_shell).map(|why| format!("{}:{}: {why}", path.display(), n + 1)))
        .collect()
}

#[test]
fn no_file_of_the_project_refers_to_a_path_outside_the_repository() {
    let mut all = Vec::new();
    for s in SCANNED {
        files(&Path::new(ROOT).join(s), &mut all);
    }
    assert!(all.len() > 50, "the scan found only {} files: wrong root?", all.len());
    let mut found = Vec::new();
    for f in &all {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        // This file spells out the forbidden patterns to find them.
        if f.ends_with("tests/repo_paths.rs") {
            continue;
        }
        found.extend(violations(f, &text));
    }
    assert!(found.is_empty(), "references outside the repository:\n{}", found.join("\n"));
}

#[test]
fn the_check_catches_references_outside_the_repository() {
    let rs = Path::new("tests/x.rs");
    let sh = Path::new("scripts/x");
    for bad in [
        r#"const F: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");"#,
        r#"Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")"#,
        r#"std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../other/events.jsonl"))"#,
        r#"let db = "/work/main/db";"#,
        r#"let bin = "/root/strfry/src/strfry";"#,
        r#"std::fs::read("/home/me/events.jsonl")"#,
    ] {
        assert_eq!(violations(rs, bad).len(), 1, "not caught: {bad}");
    }
    for bad in ["cp ../shared/fixtures/x .", "cd ~/strfry", r#"cat "$HOME/x""#] {
        assert_eq!(violations(sh, &format!("#!/bin/sh\n{bad}")).len(), 1, "not caught: {bad}");
    }
    for good in [
        r#"const F: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");"#,
        r#"std::fs::read_to_string("/proc/self/status")"#,
        r#"get("/metrics")"#,
        r#"let url = "wss://relay.example.com/";"#,
    ] {
        assert!(violations(rs, good).is_empty(), "wrongly caught: {good}");
    }
    assert!(violations(sh, "#!/bin/sh\ncd \"$(dirname \"$0\")/..\"").is_empty());
    let example = Path::new("examples/x.rs");
    assert!(violations(example, r#"#[path = "../tests/support/strfry.rs"]"#).is_empty());
    assert_eq!(violations(example, r#"#[path = "../../elsewhere/strfry.rs"]"#).len(), 1);
    assert_eq!(violations(Path::new("fuzz/Cargo.toml"), r#"grasp-sync = { path = "../.." }"#).len(), 1);
}
