use super::*;
use crate::policy::event::KIND_ISSUE;
use crate::policy::tests::ann;
use crate::policy::{maintainer_set, Policy, Verdict};

const S: &str = "wss://grasp.example.com";

fn policy() -> Policy {
    Policy::new(RelayUrl::parse(S).unwrap(), false)
}

fn repo(pk: u8, d: &str) -> RepoCoord {
    RepoCoord { pubkey: [pk; 32], d: d.into() }
}

fn event(id: u8, author: u8, kind: u64, at: u64, repo_refs: Vec<RepoCoord>, id_refs: Vec<Id>) -> Facts {
    Facts {
        id: [id; 32],
        pubkey: [author; 32],
        kind,
        created_at: at,
        d: None,
        repo_refs,
        id_refs,
        announcement: None,
        grasp_servers: Vec::new(),
    }
}

fn blocked(v: Verdict) -> String {
    match v {
        Verdict::Reject(msg) if msg.starts_with("blocked:") => msg,
        other => panic!("expected a blocked: rejection, got {other:?}"),
    }
}

#[test]
fn after_the_owner_deletes_the_repository_an_issue_about_it_is_blocked() {
    let p = policy();
    let mut v = AcceptedSet::new();
    assert!(p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[2], 10)).is_accept());
    assert!(p.decide_and_record(&mut v, &event(50, 7, KIND_ISSUE, 11, vec![repo(1, "r")], vec![])).is_accept());
    // Someone else's deletion is accepted (strfry ignores it) and changes nothing.
    p.decide_and_record(&mut v, &event(60, 9, KIND_DELETION, 12, vec![repo(1, "r")], vec![]));
    assert!(v.has_repo(&repo(1, "r")));
    assert!(p.decide_and_record(&mut v, &event(61, 1, KIND_DELETION, 12, vec![repo(1, "r")], vec![])).is_accept());
    assert!(!v.has_repo(&repo(1, "r")));
    let msg = blocked(p.decide(&v, &event(51, 7, KIND_ISSUE, 13, vec![repo(1, "r")], vec![])));
    assert!(msg.contains("no repository or event"), "{msg}");
    // What was accepted only through the repository is no longer accepted: a reply to the old
    // issue is refused too.
    assert!(!v.has_event(&[50; 32]));
    blocked(p.decide(&v, &event(52, 7, 1111, 13, vec![], vec![[50; 32]])));
    // A copy of the deleted announcement (or an older one) is refused; a newer one is a new start.
    let msg = blocked(p.decide(&v, &ann(1, "r", &[S], &[], &[2], 12)));
    assert!(msg.contains("deleted by its owner"), "{msg}");
    assert!(p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 20)).is_accept());
    assert!(v.has_repo(&repo(1, "r")));
    assert!(v.has_event(&[50; 32]), "the issue the host still holds counts again");
}

#[test]
fn a_maintainer_anchored_only_by_a_deleted_announcement_drops_out() {
    let p = policy();
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[2], 10));
    assert!(p.decide_and_record(&mut v, &ann(2, "r", &["wss://b.example"], &[], &[], 10)).is_accept());
    assert!(v.has_repo(&repo(2, "r")));
    p.decide_and_record(&mut v, &event(61, 1, KIND_DELETION, 12, vec![repo(1, "r")], vec![]));
    assert!(!v.has_repo(&repo(2, "r")));
    assert!(maintainer_set(&v, "r").is_empty());
    // The maintainer's later update is refused and brings nothing back.
    let msg = blocked(p.decide_and_record(&mut v, &ann(2, "r", &["wss://b.example"], &[], &[1], 30)));
    assert!(msg.contains("maintains no repository"), "{msg}");
    assert!(v.announcements("r").is_empty());
}

#[test]
fn deleting_an_event_by_id_counts_only_for_its_author() {
    let p = policy();
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 10));
    p.decide_and_record(&mut v, &event(50, 7, KIND_ISSUE, 11, vec![repo(1, "r")], vec![]));
    p.decide_and_record(&mut v, &event(51, 8, 1111, 12, vec![], vec![[50; 32]]));
    p.decide_and_record(&mut v, &event(60, 9, KIND_DELETION, 13, vec![], vec![[50; 32]]));
    assert!(v.has_event(&[50; 32]), "a stranger cannot delete it");
    p.decide_and_record(&mut v, &event(61, 7, KIND_DELETION, 13, vec![], vec![[50; 32]]));
    assert!(!v.has_event(&[50; 32]));
    assert!(!v.has_event(&[51; 32]), "the reply was accepted only through the deleted issue");
    let msg = blocked(p.decide(&v, &event(50, 7, KIND_ISSUE, 11, vec![repo(1, "r")], vec![])));
    assert!(msg.contains("deleted by its author"), "{msg}");
}

#[test]
fn a_replacement_that_no_longer_lists_the_service_drops_the_repository_unless_the_chain_anchors_it() {
    let p = policy();
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[2], 10));
    p.decide_and_record(&mut v, &ann(2, "r", &[S], &[], &[1], 10));
    // Alice stops listing us, but Bob (listing us) names her: her repository stays.
    assert!(p.decide_and_record(&mut v, &ann(1, "r", &["wss://a.example"], &[], &[2], 11)).is_accept());
    assert!(v.has_repo(&repo(1, "r")));
    // Bob stops listing us too: nothing anchors either any more.
    assert!(p.decide_and_record(&mut v, &ann(2, "r", &["wss://b.example"], &[], &[1], 11)).is_accept());
    assert!(!v.has_repo(&repo(1, "r")) && !v.has_repo(&repo(2, "r")));
    blocked(p.decide(&v, &event(50, 7, KIND_ISSUE, 12, vec![repo(1, "r")], vec![])));
}

#[test]
fn a_deletion_that_arrives_before_the_announcement_still_counts() {
    let p = policy();
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &event(61, 1, KIND_DELETION, 12, vec![repo(1, "r")], vec![]));
    blocked(p.decide_and_record(&mut v, &ann(1, "r", &[S], &[], &[], 10)));
    assert!(!v.has_repo(&repo(1, "r")));
}

#[test]
fn a_grasp_server_list_that_names_this_service_is_accepted() {
    let p = policy();
    let mut v = AcceptedSet::new();
    let list = |id: u8, servers: &[&str]| {
        let tags: Vec<Vec<String>> = servers.iter().map(|s| vec!["g".to_string(), s.to_string()]).collect();
        Facts::from_parts([id; 32], [4; 32], crate::policy::event::KIND_GRASP_LIST, 5, &tags)
    };
    let verdict = p.decide_and_record(&mut v, &list(1, &["wss://other.example", "WSS://grasp.example.com:443/"]));
    assert_eq!(verdict, Verdict::Accept(crate::policy::Reason::GraspListListsService));
    let msg = blocked(p.decide(&v, &list(2, &["wss://other.example", "wss://grasp.example.com.evil.org"])));
    assert!(msg.contains("references no repository"), "{msg}");
}

#[test]
fn deleting_a_repository_nobody_wrote_to_does_not_recompute_everything() {
    let p = policy();
    let mut v = AcceptedSet::new();
    p.decide_and_record(&mut v, &ann(1, "busy", &[S], &[], &[], 10));
    p.decide_and_record(&mut v, &event(50, 7, KIND_ISSUE, 11, vec![repo(1, "busy")], vec![]));
    p.decide_and_record(&mut v, &ann(2, "spam", &[S], &[], &[], 10));
    let change = v.record(&event(60, 2, KIND_DELETION, 12, vec![repo(2, "spam")], vec![]), false);
    assert!(!change.recomputed, "{change:?}");
    assert!(!v.has_repo(&repo(2, "spam")) && v.has_event(&[50; 32]));
    // Deleting the busy one must revisit what stood on it.
    let change = v.record(&event(61, 1, KIND_DELETION, 12, vec![repo(1, "busy")], vec![]), false);
    assert!(change.recomputed && !v.has_event(&[50; 32]));
}
