use proptest::prelude::*;

use super::*;
use crate::policy::RelayUrl;

const SERVICE: &str = "wss://grasp.example.com";

fn policy() -> Policy {
    Policy::new(RelayUrl::parse(SERVICE).unwrap(), false)
}

fn id(n: u8) -> Id {
    let mut id = [0u8; 32];
    id[0] = 0xee;
    id[31] = n;
    id
}

fn pk(n: u8) -> Id {
    [n + 1; 32]
}

fn coord(owner: u8, d: &str) -> String {
    format!("30617:{}:{d}", hex::encode(pk(owner)))
}

fn tag(name: &str, values: &[&str]) -> Vec<String> {
    std::iter::once(name).chain(values.iter().copied()).map(str::to_string).collect()
}

fn add(src: &mut MemorySource, n: u8, author: u8, kind: u64, tags: Vec<Vec<String>>) {
    let facts = Facts::from_parts(id(n), pk(author), kind, 1000 + n as u64, &tags);
    src.push(facts, &tags);
}

fn announcement(listing: bool, maintainers: &[u8], d: &str) -> Vec<Vec<String>> {
    let relays: &[&str] = if listing { &[SERVICE, "wss://r1.example.com"] } else { &["wss://r9.example.com"] };
    let m: Vec<String> = maintainers.iter().map(|&p| hex::encode(pk(p))).collect();
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    vec![tag("d", &[d]), tag("relays", relays), tag("maintainers", &m)]
}

/// The policy applied event by event, over and over until nothing changes: the slow reference.
fn brute_force(src: &MemorySource) -> AcceptedSet {
    let p = policy();
    let mut view = AcceptedSet::new();
    loop {
        let mut changed = false;
        for (f, _) in &src.events {
            if !view.has_event(&f.id) && p.decide(&view, f).is_accept() {
                view.record(f, p.lists_service(f));
                changed = true;
            }
        }
        if !changed {
            return view;
        }
    }
}

fn accepted_ids(src: &MemorySource, view: &AcceptedSet) -> Vec<Id> {
    src.events.iter().map(|(f, _)| f.id).filter(|i| view.has_event(i)).collect()
}

#[test]
fn maintainer_announcement_counts_whatever_the_storage_order() {
    // Bob's announcement (not listing us) comes first; Alice's names him as maintainer.
    for bob_first in [true, false] {
        let mut src = MemorySource::default();
        let (bob, alice) = (
            |s: &mut MemorySource| add(s, 1, 1, KIND_ANNOUNCEMENT, announcement(false, &[], "r")),
            |s: &mut MemorySource| add(s, 2, 0, KIND_ANNOUNCEMENT, announcement(true, &[1], "r")),
        );
        if bob_first {
            bob(&mut src);
            alice(&mut src);
        } else {
            alice(&mut src);
            bob(&mut src);
        }
        add(&mut src, 3, 2, 1621, vec![tag("a", &[&coord(1, "r")])]);
        let built = build(&policy(), &mut src).unwrap();
        assert_eq!(built.index.len(), 2, "owner's and maintainer's repositories");
        let bob_repo = RepoCoord { pubkey: pk(1), d: "r".into() };
        assert!(built.index.get(&bob_repo).unwrap().relays.iter().any(|r| r.as_str() == "wss://r9.example.com"));
        assert!(
            built.index.get(&bob_repo).unwrap().root_events.contains(&id(3)),
            "issue tagging the maintainer's repo is a root"
        );
        assert_eq!(built.stats.accepted_events, 3);
    }
}

#[test]
fn irrelevant_events_do_not_count_and_references_are_followed_both_ways() {
    let mut src = MemorySource::default();
    add(&mut src, 1, 0, KIND_ANNOUNCEMENT, announcement(true, &[], "r"));
    add(&mut src, 2, 0, KIND_ANNOUNCEMENT, announcement(false, &[], "other"));
    add(&mut src, 3, 2, 1617, vec![tag("a", &[&coord(0, "r")]), tag("e", &[&hex::encode(id(7))])]);
    add(&mut src, 4, 2, 1111, vec![tag("E", &[&hex::encode(id(3))])]);
    add(&mut src, 5, 2, 1, vec![tag("q", &[&hex::encode(id(4))])]);
    add(&mut src, 6, 2, 1621, vec![tag("a", &[&coord(0, "other")])]);
    add(&mut src, 7, 3, 1, vec![]); // referenced by the accepted patch
    add(&mut src, 8, 3, 5, vec![tag("e", &[&hex::encode(id(6))])]); // deletes nothing of ours
    add(&mut src, 9, 3, 30618, vec![tag("d", &["r"])]); // state by a stranger
    let built = build(&policy(), &mut src).unwrap();
    let got = accepted_ids(&src, &built.accepted);
    assert_eq!(got, [id(1), id(3), id(4), id(5), id(7)]);
    assert_eq!(built.index.root_count(), 1);
    assert!(built.accepted.is_referenced(&id(7)));
}

#[test]
fn only_the_newest_announcement_per_author_and_d_counts() {
    let mut src = MemorySource::default();
    add(&mut src, 1, 0, KIND_ANNOUNCEMENT, announcement(true, &[], "r"));
    add(&mut src, 2, 0, KIND_ANNOUNCEMENT, announcement(false, &[], "r")); // newer, no longer lists us
    let built = build(&policy(), &mut src).unwrap();
    assert!(built.index.is_empty());
    assert_eq!(built.stats.announcements, 1);
}

/// A random little world: announcements (unique per author and d), states, and other events
/// with random repo and id references.
fn world() -> impl Strategy<Value = MemorySource> {
    let ann = (0..4u8, 0..2usize, any::<bool>(), proptest::collection::vec(0..4u8, 0..3));
    let state = (0..4u8, 0..2usize);
    let other = (
        0..4u8,
        prop::sample::select(vec![1617u64, 1618, 1621, 1111, 1, 7]),
        proptest::option::of((0..4u8, 0..2usize, prop::sample::select(vec!["a", "A", "q"]))),
        proptest::option::of((0..40u8, prop::sample::select(vec!["e", "E", "q"]))),
    );
    (
        proptest::collection::vec(ann, 0..8),
        proptest::collection::vec(state, 0..4),
        proptest::collection::vec(other, 0..24),
        any::<u64>(),
    )
        .prop_map(|(anns, states, others, seed)| {
            let ds = ["r0", "r1"];
            let mut src = MemorySource::default();
            let mut n = 0u8;
            let mut seen = std::collections::HashSet::new();
            for (author, d, listing, maint) in anns {
                if seen.insert((author, d)) {
                    n += 1;
                    add(&mut src, n, author, KIND_ANNOUNCEMENT, announcement(listing, &maint, ds[d]));
                }
            }
            // Replaceable: strfry holds one state per author and d.
            let states: std::collections::BTreeSet<(u8, usize)> = states.into_iter().collect();
            for (author, d) in states {
                n += 1;
                add(&mut src, n, author, KIND_STATE, vec![tag("d", &[ds[d]])]);
            }
            for (author, kind, repo, idref) in others {
                n += 1;
                let mut tags = Vec::new();
                if let Some((owner, d, letter)) = repo {
                    tags.push(tag(letter, &[&coord(owner, ds[d])]));
                }
                if let Some((target, letter)) = idref {
                    tags.push(tag(letter, &[&hex::encode(id(target))]));
                }
                add(&mut src, n, author, kind, tags);
            }
            // Storage order must not matter: rotate by a random amount.
            let len = src.events.len().max(1);
            let mut events = src.events;
            events.rotate_left(seed as usize % len);
            let mut rotated = MemorySource::default();
            for (f, tags) in events {
                let tags: Vec<Vec<String>> = tags.into_iter().map(|(c, v)| vec![c.to_string(), v]).collect();
                rotated.push(f, &tags);
            }
            rotated
        })
}

proptest! {
    #[test]
    fn build_accepts_exactly_what_the_policy_accepts_at_its_fixpoint(mut src in world()) {
        let reference = brute_force(&src);
        let built = build(&policy(), &mut src).unwrap();
        prop_assert_eq!(accepted_ids(&src, &built.accepted), accepted_ids(&src, &reference));
        prop_assert_eq!(built.stats.accepted_events, reference.event_count());
        // Every indexed repository is an accepted announcement; every root tags one of them.
        for (coord, entry) in built.index.repos() {
            prop_assert!(reference.has_repo(coord));
            for root in &entry.root_events {
                prop_assert!(reference.has_event(root));
            }
        }
        prop_assert_eq!(built.index.len(), reference.all_announcements().count());
    }
}
