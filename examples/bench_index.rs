//! Benchmark of the repo index build and of negentropy local-set extraction on a generated
//! strfry-shaped database. Run through `scripts/bench-index`.
//!
//! `bench_index generate DIR EVENTS REPOS` writes the database;
//! `bench_index index DIR` builds the index (fresh process, so peak RSS is the reader's own).

use std::path::Path;
use std::time::Instant;

use grasp_sync::host::lmdb::{load_index, StrfryDb};
use grasp_sync::policy::{Note, Policy, RelayUrl};
use grasp_sync::testkit::flood::Rng;
use grasp_sync::testkit::generate::Generator;
use grasp_sync::wire::filter::Filter;

const SERVICE: &str = "wss://grasp.example.com";
/// Spread of created_at: three years.
const SPAN: u64 = 3 * 365 * 86_400;
const START: u64 = 1_700_000_000;

fn key(i: u64) -> String {
    format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
}

fn coord(owner: &str, d: &str) -> String {
    format!("30617:{owner}:{d}")
}

fn ev(rng: &mut Rng, pubkey: &str, kind: u64, tags: Vec<Vec<String>>, content_len: usize) -> Note {
    Note {
        id: rng.hex32(),
        pubkey: pubkey.to_string(),
        created_at: START + rng.below(SPAN),
        kind,
        tags,
        content: "x".repeat(content_len),
        sig: format!("{}{}", rng.hex32(), rng.hex32()),
    }
}

fn t(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Builds the event set: per repository an announcement (60% list the service; every tenth
/// has a maintainer whose own announcement rides on the chain), a state event, 10 root events,
/// 25 comments and 5 status events; the rest are unrelated notes that reference each other.
fn events(total: u64, repos: u64) -> Vec<Note> {
    let mut rng = Rng(0x5eed);
    let mut out = Vec::with_capacity(total as usize);
    for r in 0..repos {
        let owner = key(r);
        let d = format!("repo-{r}");
        let listing = r % 10 < 6;
        let relays: Vec<&str> = if listing {
            vec!["relays", SERVICE, "wss://r1.example.com", "wss://r2.example.com"]
        } else {
            vec!["relays", "wss://elsewhere.example.com"]
        };
        let mut tags = vec![t(&["d", &d]), t(&relays), t(&["clone", "https://git.example.com/x.git"])];
        let maintainer = key(1_000_000 + r);
        if r % 10 == 0 {
            tags.push(t(&["maintainers", &maintainer]));
        }
        out.push(ev(&mut rng, &owner, 30617, tags, 40));
        if r % 10 == 0 {
            let tags = vec![t(&["d", &d]), t(&["relays", "wss://m.example.com"])];
            out.push(ev(&mut rng, &maintainer, 30617, tags, 40));
        }
        let head = rng.hex32();
        out.push(ev(&mut rng, &owner, 30618, vec![t(&["d", &d]), t(&["refs/heads/main", &head])], 0));
        let c = coord(&owner, &d);
        for i in 0..10 {
            let kind = [1617, 1621][i % 2];
            let author = key(2_000_000 + rng.below(50_000));
            let root = ev(&mut rng, &author, kind, vec![t(&["a", &c]), t(&["p", &owner])], 200);
            let root_id = root.id.clone();
            out.push(root);
            for _ in 0..(if i < 5 { 5 } else { 0 }) {
                let who = key(2_000_000 + rng.below(50_000));
                let tags = vec![t(&["E", &root_id]), t(&["e", &root_id]), t(&["K", "1621"]), t(&["p", &author])];
                out.push(ev(&mut rng, &who, 1111, tags, 120));
            }
            if i < 5 {
                out.push(ev(&mut rng, &owner, 1631, vec![t(&["e", &root_id]), t(&["a", &c])], 0));
            }
        }
    }
    let mut junk_ids: Vec<String> = Vec::new();
    while (out.len() as u64) < total {
        let author = key(3_000_000 + rng.below(100_000));
        let mut tags = vec![t(&["p", &key(rng.below(200_000))])];
        if !junk_ids.is_empty() && rng.below(3) == 0 {
            let target = junk_ids[rng.below(junk_ids.len() as u64) as usize].clone();
            tags.push(t(&["e", &target]));
        }
        let n = ev(&mut rng, &author, 1, tags, 150);
        if junk_ids.len() < 100_000 {
            junk_ids.push(n.id.clone());
        }
        out.push(n);
    }
    // strfry stores in arrival order, roughly by time.
    out.sort_by_key(|n| n.created_at);
    out
}

/// A `/proc/self/status` value in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Current RSS split: (heap and other private memory, mapped database pages).
fn rss_split_mib() -> (u64, u64) {
    (status_kib("RssAnon:") >> 10, status_kib("RssFile:") >> 10)
}

fn generate(dir: &Path, total: u64, repos: u64) {
    let started = Instant::now();
    let notes = events(total, repos);
    let mut g = Generator::create(dir, 64 << 30).expect("create database");
    for chunk in notes.chunks(50_000) {
        g.write(chunk).expect("write events");
    }
    g.finish().expect("sync");
    let size = std::fs::metadata(dir.join("data.mdb")).map(|m| m.len()).unwrap_or(0);
    println!("peak RSS of the generator {} MiB", peak_rss_kib() >> 10);
    println!(
        "generated {} events, {repos} repositories in {:.1} s; data.mdb {} MiB",
        notes.len(),
        started.elapsed().as_secs_f64(),
        size >> 20
    );
}

fn index(dir: &Path, repos: u64) {
    let policy = Policy::new(RelayUrl::parse(SERVICE).unwrap(), false);
    let started = Instant::now();
    let db = StrfryDb::open(dir).expect("open database");
    let (anon, file) = rss_split_mib();
    println!("  RSS after open: {anon} MiB private, {file} MiB mapped");
    let (built, last, took) = load_index(&db, &policy).expect("build index");
    let total = started.elapsed();
    let rss = peak_rss_kib();
    if std::env::var_os("BENCH_REPEAT").is_some() {
        let (_, _, again) = load_index(&db, &policy).expect("build index");
        println!("  second build in the same process: {:.3} s", again.as_secs_f64());
    }
    let (anon, file) = rss_split_mib();
    println!("  RSS after build: {anon} MiB private (heap), {file} MiB mapped database pages (page cache shared with strfry)");
    println!(
        "index build: {:.3} s (open + build; build alone {:.3} s), peak RSS {} MiB; {} events, {} repos, {} root events, {} accepted events, {} lookups",
        total.as_secs_f64(),
        took.as_secs_f64(),
        rss >> 10,
        last,
        built.index.len(),
        built.index.root_count(),
        built.stats.accepted_events,
        built.stats.lookups
    );

    // One L2 filter for 100 listing repositories (the daemon chunks values by 100).
    let coords: Vec<String> =
        (0..repos).filter(|r| r % 10 < 6).take(100).map(|r| coord(&key(r), &format!("repo-{r}"))).collect();
    let ds: Vec<String> = (0..repos).filter(|r| r % 10 < 6).take(100).map(|r| format!("repo-{r}")).collect();
    let snap = db.snapshot().expect("snapshot");
    for (name, filter) in [
        ("#a of 100 repos", Filter::default().tag('a', coords)),
        ("kinds 30618 #d of 100 repos", Filter::kinds([30618]).tag('d', ds)),
    ] {
        let started = Instant::now();
        let set = snap.local_set(&filter).expect("local set");
        println!("local set {name}: {} entries in {:.2} ms", set.len(), started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("peak RSS at end {} MiB", peak_rss_kib() >> 10);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_index generate DIR EVENTS REPOS | index DIR REPOS";
    match args.get(1).map(String::as_str) {
        Some("generate") if args.len() == 5 => {
            generate(Path::new(&args[2]), args[3].parse().expect(usage), args[4].parse().expect(usage))
        }
        Some("index") if args.len() == 4 => index(Path::new(&args[2]), args[3].parse().expect(usage)),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
