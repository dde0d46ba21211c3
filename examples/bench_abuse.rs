//! Benchmark of the relay limits under an announcement flood: N announcements listing this
//! service, each with M relay values (public relays spelled several ways, private addresses,
//! garbage). Reports the time to build the index and to choose targets, and the memory they take,
//! counted by a global allocator wrapper (live bytes, and the peak while choosing targets).
//! Run through `scripts/bench-abuse`; asserts nothing.
//!
//! `bench_abuse [ANNOUNCEMENTS] [RELAYS_PER_ANNOUNCEMENT] [MAX_RELAYS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use grasp_sync::accepted::build::{build, MemorySource};
use grasp_sync::accepted::RepoSyncIndex;
use grasp_sync::engine::{derive_relay_targets, summarize_refusals, TargetRules};
use grasp_sync::policy::{AcceptedSet, Facts, Policy, RelayUrl};
use grasp_sync::testkit::flood::{flood, FloodSpec};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERVICE: &str = "wss://grasp.example.com";
const PUBKEY: &str = "9997a497d964fc1a62885b05a51166a65a90df00492c8d7cf61d6accf54803be";

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let announcements = args.first().copied().unwrap_or(10_000);
    let per = args.get(1).copied().unwrap_or(100);
    let max_relays = args.get(2).copied().unwrap_or(1000);

    let t = Instant::now();
    let mut spec = FloodSpec::large(SERVICE, PUBKEY);
    spec.announcements = announcements;
    spec.relays_per_announcement = per;
    let anns = flood(&spec);
    let facts: Vec<Facts> = anns.iter().map(|a| Facts::from_note(&a.note).expect("valid id")).collect();
    println!(
        "flood: {announcements} announcements x {per} relay values generated in {:.2} s ({} of events in memory)",
        t.elapsed().as_secs_f64(),
        mib(live())
    );

    // Live path: each announcement decided and applied as the daemon does.
    let service = RelayUrl::parse(SERVICE).unwrap();
    let policy = Policy::new(service.clone(), false);
    let before = live();
    let t = Instant::now();
    let mut view = AcceptedSet::new();
    for f in &facts {
        policy.decide_and_record(&mut view, f);
    }
    let view_took = t.elapsed();
    let view_bytes = live() - before;
    let before = live();
    let t = Instant::now();
    let index = RepoSyncIndex::from_view(&service, &view);
    let index_took = t.elapsed();
    let index_bytes = live() - before;
    let distinct: std::collections::HashSet<&RelayUrl> = index.repos().flat_map(|(_, e)| e.relays.iter()).collect();
    let url_bytes: usize = distinct.iter().map(|u| u.as_str().len()).sum();
    let ignored = index.ignored_relays();
    println!(
        "policy + accepted view: {:.1} ms, {} live ({:.0} B per announcement)",
        view_took.as_secs_f64() * 1e3,
        mib(view_bytes),
        view_bytes as f64 / announcements.max(1) as f64
    );
    println!(
        "repo index (live path): {:.1} ms, {} live ({:.0} B per announcement); {} repos, {} relay entries \
         (<= 20 per announcement), {} distinct relays ({} of URL text)",
        index_took.as_secs_f64() * 1e3,
        mib(index_bytes),
        index_bytes as f64 / announcements.max(1) as f64,
        index.len(),
        index.relay_entry_count(),
        distinct.len(),
        mib(url_bytes)
    );
    println!(
        "relay values ignored: invalid {}, duplicate {}, over the per-announcement limit {}",
        ignored.invalid, ignored.duplicate, ignored.over_limit
    );
    let before = live();
    let copy = index.clone();
    println!("one more copy of the index (the engine's): {}", mib(live() - before));
    drop(copy);

    // Start path: the same index built from stored announcements.
    let mut source = MemorySource::default();
    for (a, f) in anns.iter().zip(&facts) {
        source.push(f.clone(), &a.note.tags);
    }
    let t = Instant::now();
    let built = build(&policy, &mut source).expect("in-memory source");
    println!(
        "repo index (start path, build from a store): {:.1} ms, equal to the live one: {}",
        t.elapsed().as_secs_f64() * 1e3,
        built.index == index
    );
    drop(built);
    drop(source);

    // Target choice, as the coordinator runs it on every index change.
    for max in [max_relays, 50] {
        let rules = TargetRules { bootstrap: Vec::new(), allow_private_addresses: false, max_relays: max };
        let base = live();
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let targets = derive_relay_targets(&index, &service, &rules);
        let summary = summarize_refusals(&targets, 10);
        let took = t.elapsed();
        let transient = PEAK.load(Ordering::Relaxed) - base;
        println!(
            "targets (max_relays {max}): {:.1} ms, peak {} above the index; {} targets, refused {:?}",
            took.as_secs_f64() * 1e3,
            mib(transient),
            summary.targets,
            summary.by_reason
        );
    }
    println!("VmHWM (whole process, flood events included) {} MiB", vm_hwm_kib() >> 10);
}
