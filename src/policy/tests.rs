use std::collections::HashMap;

use super::event::{AnnouncementTags, KIND_ANNOUNCEMENT, KIND_STATE};
use super::*;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixtures() -> (Vec<(String, Note)>, serde_json::Value) {
    let text = std::fs::read_to_string(format!("{FIX}/events.jsonl")).unwrap();
    let notes = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_string(), serde_json::from_value(v["event"].clone()).unwrap())
        })
        .collect();
    let manifest = serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/manifest.json")).unwrap()).unwrap();
    (notes, manifest)
}

fn policy(require_clone: bool) -> Policy {
    Policy::new(RelayUrl::parse("wss://grasp.example.com").unwrap(), require_clone)
}

fn run_all(p: &Policy, notes: &[(String, Note)]) -> HashMap<String, Verdict> {
    let mut view = AcceptedSet::new();
    notes
        .iter()
        .map(|(n, note)| (n.clone(), p.decide_and_record(&mut view, &Facts::from_note(note).unwrap())))
        .collect()
}

#[test]
fn fixture_decisions_match_manifest() {
    let (notes, manifest) = fixtures();
    let verdicts = run_all(&policy(false), &notes);
    for name in manifest["accept"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(verdicts[name].is_accept(), "{name} should be accepted: {:?}", verdicts[name]);
    }
    for name in manifest["reject"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        match &verdicts[name] {
            Verdict::Reject(msg) => assert!(msg.starts_with("blocked: "), "{msg}"),
            v => panic!("{name} should be rejected, got {v:?}"),
        }
    }
}

#[test]
fn strict_mode_still_accepts_fixture_repos_that_clone_from_the_service() {
    let (notes, manifest) = fixtures();
    let verdicts = run_all(&policy(true), &notes);
    for name in ["ann_alpha", "ann_gamma", "ann_alpha_bob", "issue_alpha"] {
        assert!(verdicts[name].is_accept(), "{name}");
    }
    for name in manifest["reject"].as_array().unwrap() {
        assert!(!verdicts[name.as_str().unwrap()].is_accept());
    }
}

// Synthetic events: ids and keys are arbitrary bytes, the rules never look at signatures.
pub(crate) fn ann(pk: u8, d: &str, relays: &[&str], clone: &[&str], maintainers: &[u8], at: u64) -> Facts {
    Facts {
        id: [pk ^ (at as u8) ^ 0x5a; 32],
        pubkey: [pk; 32],
        kind: KIND_ANNOUNCEMENT,
        created_at: at,
        d: Some(d.into()),
        repo_refs: vec![],
        id_refs: vec![],
        announcement: Some(AnnouncementTags {
            relays: relays.iter().map(|s| s.to_string()).collect(),
            clone: clone.iter().map(|s| s.to_string()).collect(),
            maintainers: maintainers.iter().map(|m| [*m; 32]).collect(),
        }),
        grasp_servers: Vec::new(),
    }
}

fn state(pk: u8, d: &str) -> Facts {
    Facts {
        id: [0xee ^ pk; 32],
        pubkey: [pk; 32],
        kind: KIND_STATE,
        created_at: 5,
        d: Some(d.into()),
        repo_refs: vec![],
        id_refs: vec![],
        announcement: None,
        grasp_servers: Vec::new(),
    }
}

fn note_referencing(id: u8, coords: &[RepoCoord], ids: &[Id]) -> Facts {
    Facts {
        id: [id; 32],
        pubkey: [9; 32],
        kind: 1621,
        created_at: 9,
        d: None,
        repo_refs: coords.to_vec(),
        id_refs: ids.to_vec(),
        announcement: None,
        grasp_servers: Vec::new(),
    }
}

const S: &str = "wss://grasp.example.com";

#[test]
fn announcement_with_lookalike_host_is_rejected() {
    let p = policy(false);
    let mut v = AcceptedSet::new();
    for relay in [
        "wss://grasp.example.com.evil.org",
        "wss://evil.org/grasp.example.com",
        "wss://xgrasp.example.com",
        "https://grasp.example.com",
    ] {
        let verdict = p.decide_and_record(&mut v, &ann(1, "r", &[relay], &[], &[], 1));
        assert!(!verdict.is_accept(), "{relay}");
    }
    assert!(p.decide_and_record(&mut v, &ann(1, "r", &["WSS://Grasp.Example.Com:443/"], &[], &[], 2)).is_accept());
}

#[test]
fn strict_mode_requires_a_clone_url_on_the_service_host() {
    let p = policy(true);
    let mut v = AcceptedSet::new();
    assert!(!p.decide_and_record(&mut v, &ann(1, "r", &[S], &["https://elsewhere.example/r.git"], &[], 1)).is_accept());
    assert!(!p
        .decide_and_record(&mut v, &ann(1, "r", &[S], &["https://grasp.example.com.evil.org/r.git"], &[], 1))
        .is_accept());
    assert!(p
        .decide_and_record(&mut v, &ann(1, "r", &[S], &["https://GRASP.example.com/npub/r.git"], &[], 1))
        .is_accept());
}

#[test]
fn maintainer_chain_is_recursive_and_cycle_safe() {
    let p = policy(false);
    let mut v = AcceptedSet::new();
    // 1 lists S and names 2; 2 names 3; 3 names 1 (a cycle); 4 is a stranger.
    assert_eq!(p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[2], 1)), Verdict::Accept(Reason::ListsService));
    assert_eq!(p.decide_and_record(&mut v, &ann(2, "r", &[], &[], &[3], 1)), Verdict::Accept(Reason::MaintainerChain));
    assert_eq!(p.decide_and_record(&mut v, &ann(3, "r", &[], &[], &[1], 1)), Verdict::Accept(Reason::MaintainerChain));
    assert!(!p.decide_and_record(&mut v, &ann(4, "r", &[], &[], &[1], 1)).is_accept());
    assert_eq!(maintainer_set(&v, "r").len(), 3);
    // Same d by an unrelated author does not inherit the chain; another d is separate.
    assert!(!p.decide_and_record(&mut v, &ann(2, "other", &[], &[], &[], 1)).is_accept());
    for pk in [1, 2, 3] {
        assert!(p.decide_and_record(&mut v, &state(pk, "r")).is_accept(), "maintainer {pk}");
    }
    assert!(!p.decide_and_record(&mut v, &state(4, "r")).is_accept());
    assert!(!p.decide_and_record(&mut v, &state(1, "other")).is_accept());
}

#[test]
fn owner_update_that_drops_the_service_is_accepted_and_removes_the_repository() {
    let p = policy(false);
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 1));
    let repo = RepoCoord { pubkey: [1; 32], d: "r".into() };
    assert!(v.has_repo(&repo));
    // The owner may move the repository away: the update is stored, and the repository is gone.
    assert!(p.decide_and_record(&mut v, &ann(1, "r", &["wss://other.example"], &[], &[], 2)).is_accept());
    assert!(v.announcements("r").is_empty());
    assert!(!v.has_repo(&repo));
    let held = v.held_announcements("r");
    assert_eq!((held.len(), held[0].created_at, held[0].lists_service), (1, 2, false));
    let issue = note_referencing(30, std::slice::from_ref(&repo), &[]);
    assert!(!p.decide(&v, &issue).is_accept(), "writes about it are refused");
    // An older copy arriving late does not replace the newer one (nor bring the repository back).
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 1));
    assert_eq!(v.held_announcements("r")[0].created_at, 2);
    assert!(!v.has_repo(&repo));
}

#[test]
fn announcement_and_state_without_d_are_rejected() {
    let p = policy(false);
    let mut v = AcceptedSet::new();
    let mut a = ann(1, "r", &[S], &[], &[], 1);
    a.d = None;
    assert!(matches!(p.decide(&v, &a), Verdict::Reject(m) if m.contains("no d tag")));
    let mut s = state(1, "r");
    s.d = None;
    assert!(!p.decide_and_record(&mut v, &s).is_accept());
}

#[test]
fn other_kinds_follow_references_either_way() {
    let p = policy(false);
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 1));
    let repo = RepoCoord { pubkey: [1; 32], d: "r".into() };
    let other_repo = RepoCoord { pubkey: [2; 32], d: "r".into() };
    assert!(!p.decide_and_record(&mut v, &note_referencing(10, &[other_repo], &[])).is_accept());
    assert_eq!(
        p.decide_and_record(&mut v, &note_referencing(11, &[repo], &[])),
        Verdict::Accept(Reason::ReferencesRepo)
    );
    assert_eq!(
        p.decide_and_record(&mut v, &note_referencing(12, &[], &[[11; 32]])),
        Verdict::Accept(Reason::ReferencesEvent)
    );
    // A reply accepted before its parent makes the parent acceptable.
    assert_eq!(
        p.decide_and_record(&mut v, &note_referencing(13, &[], &[[11; 32], [20; 32]])),
        Verdict::Accept(Reason::ReferencesEvent)
    );
    assert_eq!(
        p.decide_and_record(&mut v, &note_referencing(20, &[], &[])),
        Verdict::Accept(Reason::ReferencedByAccepted)
    );
    assert!(!p.decide_and_record(&mut v, &note_referencing(21, &[], &[])).is_accept());
    let mut deletion = note_referencing(30, &[], &[]);
    deletion.kind = 5;
    assert_eq!(p.decide(&v, &deletion), Verdict::Accept(Reason::Deletion));
}

proptest::proptest! {
    /// Unrelated events never change a decision: feeding junk first gives the same verdicts.
    #[test]
    fn unrelated_events_do_not_change_decisions(junk in proptest::collection::vec((50u8..200, 0u8..3), 0..30)) {
        let (notes, _) = fixtures();
        let p = policy(false);
        let clean = run_all(&p, &notes);
        let mut view = AcceptedSet::new();
        for (pk, what) in junk {
            let f = match what {
                0 => ann(pk, "zzz", &["wss://elsewhere.example"], &[], &[pk.wrapping_add(1)], 1),
                1 => state(pk, "alpha"),
                _ => note_referencing(pk, &[RepoCoord { pubkey: [pk; 32], d: "alpha".into() }], &[[pk; 32]]),
            };
            p.decide_and_record(&mut view, &f);
        }
        for (name, note) in &notes {
            let v = p.decide_and_record(&mut view, &Facts::from_note(note).unwrap());
            proptest::prop_assert_eq!(v.is_accept(), clean[name].is_accept(), "{}", name);
        }
    }

    /// Any maintainer graph terminates and the set is exactly what is reachable from the owners.
    #[test]
    fn maintainer_set_is_reachability(edges in proptest::collection::vec((0u8..8, 0u8..8), 0..40)) {
        let mut v = AcceptedSet::new();
        let mut by_owner: HashMap<u8, Vec<u8>> = HashMap::new();
        for (a, b) in &edges { by_owner.entry(*a).or_default().push(*b); }
        // Record every owner's announcement directly (as if each listed the service).
        for (owner, ms) in &by_owner { v.record(&ann(*owner, "r", &[], &[], ms, 1), true); }
        let mut expected: std::collections::HashSet<u8> = by_owner.keys().copied().collect();
        loop {
            let next: std::collections::HashSet<u8> = expected.iter().flat_map(|o| by_owner.get(o).cloned().unwrap_or_default()).chain(expected.iter().copied()).collect();
            if next == expected { break; }
            expected = next;
        }
        let got: std::collections::HashSet<u8> = maintainer_set(&v, "r").into_iter().map(|k| k[0]).collect();
        proptest::prop_assert_eq!(got, expected);
    }
}
