//! The modules of `src/` import each other only in the direction `docs/architecture.md` states:
//! its `deps` block lists, per top-level module, the modules it may use. A `crate::` path in a
//! module's production code (items marked `#[cfg(test)]` are not counted) to a module not
//! on its line fails this test, and so does a module missing from the block.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → modules it may import, from the fenced ```deps block of the architecture document.
fn allowed(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let block = doc.split("```deps\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a ```deps block");
    block
        .lines()
        .filter_map(|l| l.split_once("->"))
        .map(|(m, deps)| {
            (m.trim().to_string(), deps.split_whitespace().filter(|d| *d != "(nothing)").map(String::from).collect())
        })
        .collect()
}

/// The text without items marked `#[cfg(test)]` (a `mod tests;` line, or a whole braced block).
fn production(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip the item the attribute applies to.
        let mut depth = 0i64;
        let mut opened = false;
        for item in lines.by_ref() {
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            opened |= item.contains('{');
            if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// Top-level modules a source text names through `crate::`, production code only.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in production(text).lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            // `grasp_sync::` or `$crate::` is not this crate's own path.
            if line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = line[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every import against the allowed direction, as `file: module -> imported`.
fn violations(src: &Path, allowed: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let module = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        // Whole files of unit tests (`tests.rs`, `*_tests.rs`) are test code.
        let name = f.file_stem().unwrap().to_string_lossy();
        if name == "tests" || name.ends_with("_tests") {
            continue;
        }
        let Some(may) = allowed.get(&module) else {
            bad.push(format!("{}: module `{module}` is not in the deps block", rel.display()));
            continue;
        };
        for dep in imports(&std::fs::read_to_string(&f).unwrap()) {
            if dep != module && !may.contains(&dep) {
                bad.push(format!("{}: {module} -> {dep}", rel.display()));
            }
        }
    }
    bad
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn modules_import_only_in_the_documented_direction() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let allowed = allowed(&doc);
    let bad = violations(&root().join("src"), &allowed);
    assert!(bad.is_empty(), "imports against docs/architecture.md's direction:\n{}", bad.join("\n"));
}

#[test]
fn the_documented_direction_has_no_cycle() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let allowed = allowed(&doc);
    // Peel off modules whose allowed imports are all peeled already; what remains is a cycle.
    let mut left: BTreeMap<_, _> = allowed.clone();
    while let Some(m) = left.iter().find(|(_, deps)| deps.iter().all(|d| !left.contains_key(d))).map(|(m, _)| m.clone())
    {
        left.remove(&m);
    }
    assert!(left.is_empty(), "the deps block has a cycle among {:?}", left.keys().collect::<Vec<_>>());
}

#[test]
fn a_forbidden_import_is_reported() {
    let dir = std::env::temp_dir().join(format!("grasp-sync-deps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    std::fs::create_dir_all(dir.join("engine")).unwrap();
    std::fs::write(dir.join("policy/view.rs"), "use crate::engine::targets::Targets;\n").unwrap();
    std::fs::write(
        dir.join("engine/mod.rs"),
        "#[cfg(test)]\nmod tests;\nuse crate::policy::Note;\n// crate::daemon in a comment\n\
         let x = grasp_sync::daemon::run;\n#[cfg(test)]\nmod t {\n    use crate::daemon::run;\n}\n\
         fn f() { crate::host::x(); }\n",
    )
    .unwrap();
    std::fs::write(dir.join("engine/tests.rs"), "use crate::daemon::run;\n").unwrap();
    std::fs::write(dir.join("extra.rs"), "").unwrap();
    let allowed = allowed("```deps\nengine -> policy\npolicy -> (nothing)\n```\n");
    let bad = violations(&dir, &allowed);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        bad,
        [
            "engine/mod.rs: engine -> host",
            "extra.rs: module `extra` is not in the deps block",
            "policy/view.rs: policy -> engine"
        ],
        "only production imports against the direction count"
    );
}
