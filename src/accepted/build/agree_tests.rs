//! One definition of "accepted": the view and index kept up to date event by event (as the
//! plugin and the daemon keep them) equal a rebuild from what the host holds, after every step of
//! any sequence of announcements, replacements, maintainer changes, deletions and related events.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::policy::event::{KIND_DELETION, KIND_ISSUE};
use crate::policy::{RelayUrl, Verdict};

const SERVICE: &str = "wss://grasp.example.com";

fn pk(n: u8) -> Id {
    [n + 1; 32]
}

fn coord(owner: u8, d: &str) -> String {
    format!("30617:{}:{d}", hex::encode(pk(owner)))
}

#[derive(Debug, Clone)]
enum Step {
    /// author, d, lists the service, maintainers, created_at
    Announce(u8, u8, bool, Vec<u8>, u64),
    State(u8, u8, u64),
    /// author, repo owner, d
    Issue(u8, u8, u8),
    /// author, index into the events written so far (any kind)
    Reply(u8, usize),
    /// author, index of an event the new one is referenced by (it names the new one's id ahead)
    Quote(u8, usize),
    /// author, repo owner, d, created_at: an `a` deletion
    DeleteRepo(u8, u8, u8, u64),
    /// author, index of the event to delete
    DeleteEvent(u8, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0u8..4;
    prop_oneof![
        4 => (who.clone(), 0u8..2, any::<bool>(), proptest::collection::vec(0u8..4, 0..3), 1u64..12)
            .prop_map(|(a, d, l, m, t)| Step::Announce(a, d, l, m, t)),
        1 => (who.clone(), 0u8..2, 1u64..12).prop_map(|(a, d, t)| Step::State(a, d, t)),
        3 => (who.clone(), 0u8..4, 0u8..2).prop_map(|(a, o, d)| Step::Issue(a, o, d)),
        3 => (who.clone(), any::<usize>()).prop_map(|(a, i)| Step::Reply(a, i)),
        1 => (who.clone(), any::<usize>()).prop_map(|(a, i)| Step::Quote(a, i)),
        1 => (who.clone(), 0u8..4, 0u8..2, 1u64..14).prop_map(|(a, o, d, t)| Step::DeleteRepo(a, o, d, t)),
        1 => (who, any::<usize>()).prop_map(|(a, i)| Step::DeleteEvent(a, i)),
    ]
}

fn tag(name: &str, values: &[&str]) -> Vec<String> {
    std::iter::once(name).chain(values.iter().copied()).map(str::to_string).collect()
}

/// What a host stores, with strfry's rules: the newest replaceable event per address, and
/// deletions remove their author's events (by id, and by coordinate up to their time).
#[derive(Default)]
struct Store {
    events: Vec<(Facts, Vec<Vec<String>>)>,
}

impl Store {
    fn take(&mut self, f: Facts, tags: Vec<Vec<String>>) {
        if matches!(f.kind, KIND_ANNOUNCEMENT | KIND_STATE) {
            let same = |g: &Facts| g.kind == f.kind && g.pubkey == f.pubkey && g.d == f.d;
            if self.events.iter().any(|(g, _)| same(g) && !newer(&f, g)) {
                return;
            }
            self.events.retain(|(g, _)| !same(g));
        }
        if f.kind == KIND_DELETION {
            self.events.retain(|(g, _)| {
                let by_id = f.id_refs.contains(&g.id) && g.pubkey == f.pubkey;
                let by_coord = g.kind == KIND_ANNOUNCEMENT
                    && g.created_at <= f.created_at
                    && g.own_coord().is_some_and(|c| c.pubkey == f.pubkey && f.repo_refs.contains(&c));
                !(by_id || by_coord)
            });
        }
        self.events.push((f, tags));
    }

    fn source(&self) -> MemorySource {
        let mut src = MemorySource::default();
        for (f, tags) in &self.events {
            src.push(f.clone(), tags);
        }
        src
    }
}

/// Everything a decision can depend on, in a comparable form.
fn projection(view: &AcceptedSet, probe_ids: &[Id]) -> impl PartialEq + std::fmt::Debug {
    let accepted: BTreeSet<Id> = view.accepted_ids().copied().collect();
    let anns: BTreeSet<(String, Id, Id, bool)> =
        view.all_announcements().map(|(d, a)| (d.to_string(), a.pubkey, a.id, a.lists_service)).collect();
    let maintainers: BTreeSet<(u8, Id)> = (0u8..2)
        .flat_map(|d| crate::policy::maintainer_set(view, &d.to_string()).into_iter().map(move |m| (d, m)))
        .collect();
    let referenced: BTreeSet<Id> = probe_ids.iter().filter(|i| view.is_referenced(i)).copied().collect();
    (accepted, anns, maintainers, referenced)
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let service = RelayUrl::parse(SERVICE).unwrap();
    let policy = Policy::new(service.clone(), false);
    let mut view = AcceptedSet::new();
    let mut index = RepoSyncIndex::new();
    let mut store = Store::default();
    let mut written: Vec<Id> = Vec::new();
    for (n, step) in steps.into_iter().enumerate() {
        let id = {
            let mut id = [0xaa; 32];
            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
            id
        };
        let pick = |i: usize| (!written.is_empty()).then(|| hex::encode(written[i % written.len()]));
        let (author, kind, at, tags) = match step {
            Step::Announce(a, d, lists, ms, t) => {
                let relays: &[&str] =
                    if lists { &[SERVICE, "wss://r1.example.com"] } else { &["wss://r2.example.com"] };
                let ms: Vec<String> = ms.iter().map(|m| hex::encode(pk(*m))).collect();
                let ms: Vec<&str> = ms.iter().map(String::as_str).collect();
                let tags = vec![tag("d", &[&d.to_string()]), tag("relays", relays), tag("maintainers", &ms)];
                (a, KIND_ANNOUNCEMENT, t, tags)
            }
            Step::State(a, d, t) => (a, KIND_STATE, t, vec![tag("d", &[&d.to_string()])]),
            Step::Issue(a, o, d) => (a, KIND_ISSUE, 20, vec![tag("a", &[&coord(o, &d.to_string())])]),
            Step::Reply(a, i) => (a, 1111, 20, pick(i).map(|t| vec![tag("e", &[&t])]).unwrap_or_default()),
            Step::Quote(a, i) => {
                // An earlier event is referenced by this one and this one references a later id.
                let mut tags = pick(i).map(|t| vec![tag("q", &[&t])]).unwrap_or_default();
                let mut ahead = id;
                ahead[8] = 1;
                tags.push(tag("e", &[&hex::encode(ahead)]));
                (a, 7, 20, tags)
            }
            Step::DeleteRepo(a, o, d, t) => (a, KIND_DELETION, t, vec![tag("a", &[&coord(o, &d.to_string())])]),
            Step::DeleteEvent(a, i) => {
                (a, KIND_DELETION, 30, pick(i).map(|t| vec![tag("e", &[&t])]).unwrap_or_default())
            }
        };
        let facts = Facts::from_parts(id, pk(author), kind, at, &tags);
        let (verdict, change) = policy.decide_and_apply(&mut view, &facts);
        if let Verdict::Reject(msg) = &verdict {
            prop_assert!(msg.starts_with("blocked:"));
        } else {
            index.apply_change(&service, &view, &change);
            store.take(facts, tags);
            written.push(id);
        }
        let rebuilt = build(&policy, &mut store.source()).unwrap();
        prop_assert_eq!(projection(&view, &written), projection(&rebuilt.accepted, &written), "view after step {}", n);
        prop_assert_eq!(&index, &rebuilt.index, "index after step {}", n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn incremental_view_and_index_equal_a_rebuild_after_every_step(steps in proptest::collection::vec(step(), 1..40)) {
        run(steps)?;
    }
}
