//! Announcements: relay URLs, facts from arbitrary tags, announced relays and maintainer chains.
//!
//! Input: any bytes, read as (lossy) UTF-8. Each line is tried as a relay URL and as a repository
//! coordinate. The text is read as tags: a JSON array of string arrays when it is one, else one tag
//! per line with values separated by tabs. The raw bytes also describe a maintainer graph (pairs
//! of small author numbers).
//!
//! Invariants: a parsed URL is in normal form (parsing its text gives it back, also through
//! serde), fits the length limit, is `ws`/`wss` without credentials, fragment or trailing slash, and
//! answers host/port/class questions without panicking; `same_endpoint` is reflexive and
//! symmetric; coordinates survive `to_string`/`parse`; facts follow the documented tag rules
//! (first `d`, bounded deduplicated references, announcement tags for kind 30617 only, maintainer
//! keys exactly the valid hex values); announced relays are normalised, deduplicated, capped and
//! exclude the service; the maintainer set is exactly the closure of the graph, and the policy
//! accepts a state event exactly from its members.

use std::collections::{BTreeSet, HashSet};

use crate::accepted::index::{announcement_relays, MAX_RELAYS_PER_ANNOUNCEMENT};
use crate::policy::event::{parse_hex32, MAX_REFS_PER_EVENT};
use crate::policy::url::{classify_host, url_host, MAX_URL_LEN};
use crate::policy::view::{select_announced_relays, IgnoredRelays, MAX_ANNOUNCED_RELAYS};
use crate::policy::{
    maintainer_closure, maintainer_set, AcceptedSet, Announcement, Facts, Id, Policy, RelayUrl, RepoCoord, Verdict,
};

const SERVICE: &str = "wss://grasp.example.com";

/// Checks one candidate relay URL; returns it when it parsed.
pub fn check_url(input: &str) -> Option<RelayUrl> {
    let _ = classify_host(input);
    if let Some(host) = url_host(input) {
        assert_eq!(host, host.to_ascii_lowercase());
        assert!(!host.is_empty() && !host.ends_with('.'), "clone host {host:?}");
    }
    let url = RelayUrl::parse(input).ok()?;
    let text = url.as_str();
    assert!(text.len() <= MAX_URL_LEN, "normal form of {} bytes: {text}", text.len());
    assert_eq!(RelayUrl::parse(text).as_ref(), Ok(&url), "normal form re-parses to itself");
    assert_eq!(RelayUrl::parse(&url.to_string()).as_ref(), Ok(&url), "Display round trip");
    let json = serde_json::to_string(&url).expect("serialise");
    assert_eq!(serde_json::from_str::<RelayUrl>(&json).ok().as_ref(), Some(&url), "serde round trip");
    assert!(text.starts_with("ws://") || text.starts_with("wss://"), "scheme of {text}");
    assert_eq!(url.is_tls(), text.starts_with("wss://"));
    assert!(!text.contains('#'), "fragment kept in {text}");
    let parsed = url::Url::parse(text).expect("normal form is a URL");
    assert!(parsed.username().is_empty() && parsed.password().is_none(), "credentials in {text}");
    if parsed.query().is_none() {
        assert!(!text.ends_with('/'), "trailing slash in {text}");
    }
    assert!(!url.host().is_empty(), "host of {text}");
    let _ = (url.port(), url.address_class());
    assert!(url.same_endpoint(&url));
    Some(url)
}

/// Tags from the input: a JSON tag list, or one tab-separated tag per line.
fn tags_of(text: &str) -> Vec<Vec<String>> {
    serde_json::from_str(text)
        .unwrap_or_else(|_| text.lines().map(|l| l.split('\t').map(str::to_string).collect()).collect())
}

fn check_facts(tags: &[Vec<String>], kind: u64, service: &RelayUrl) {
    let facts = Facts::from_parts([7; 32], [8; 32], kind, 1, tags);
    let first_d = tags.iter().find(|t| t.len() >= 2 && t[0] == "d").map(|t| t[1].clone());
    assert_eq!(facts.d, first_d, "d is the first d tag's value");
    for refs in [facts.repo_refs.len(), facts.id_refs.len()] {
        assert!(refs <= MAX_REFS_PER_EVENT);
    }
    assert_eq!(facts.repo_refs.iter().collect::<HashSet<_>>().len(), facts.repo_refs.len(), "repo refs unique");
    assert_eq!(facts.id_refs.iter().collect::<HashSet<_>>().len(), facts.id_refs.len(), "id refs unique");
    for c in &facts.repo_refs {
        assert_eq!(RepoCoord::parse(&c.to_string()).as_ref(), Some(c));
    }
    assert_eq!(facts.announcement.is_some(), kind == 30617, "announcement tags for kind 30617 only");
    let Some(ann) = &facts.announcement else { return };

    let values = |name: &str| -> Vec<String> {
        tags.iter()
            .filter(|t| t.len() >= 2 && t[0] == name)
            .flat_map(|t| t[1..].iter().take(MAX_REFS_PER_EVENT).cloned())
            .collect()
    };
    assert_eq!(ann.relays, values("relays"));
    assert_eq!(ann.clone, values("clone"));
    let maintainers: Vec<Id> =
        values("maintainers").iter().filter_map(|v| parse_hex32(&v.to_ascii_lowercase())).collect();
    assert_eq!(ann.maintainers, maintainers, "maintainers are exactly the valid keys");

    let policy = Policy::new(service.clone(), false);
    let lists = ann.relays.iter().filter_map(|r| RelayUrl::parse(r).ok()).any(|r| r.same_endpoint(service));
    assert_eq!(policy.lists_service(&facts), lists);
    if facts.d.is_some() {
        let verdict = policy.decide(&AcceptedSet::new(), &facts);
        assert_eq!(verdict.is_accept(), lists, "a new announcement is accepted exactly when it lists the service");
    }

    let (relays, ignored) = announcement_relays(service, ann);
    assert!(relays.len() <= MAX_RELAYS_PER_ANNOUNCEMENT);
    // Every value is either one of the distinct relays selected (ours among them, removed just
    // below) or ignored for a reason.
    let selected = select_announced_relays(&ann.relays, MAX_RELAYS_PER_ANNOUNCEMENT);
    assert_eq!(selected.ignored, ignored);
    assert_eq!(selected.relays.len() as u64 + ignored.total(), ann.relays.len() as u64, "values unaccounted for");
    let others: BTreeSet<RelayUrl> = selected.relays.into_iter().filter(|r| !r.same_endpoint(service)).collect();
    assert_eq!(others, relays, "announced relays are the selected ones other than the service");
    for r in &relays {
        assert!(!r.same_endpoint(service), "service itself among the announced relays");
        assert_eq!(RelayUrl::parse(r.as_str()).as_ref(), Ok(r));
    }
    let mut view = AcceptedSet::new();
    view.record(&facts, lists);
    for (_, a) in view.all_announcements() {
        assert!(a.relays.len() <= MAX_ANNOUNCED_RELAYS);
        assert_eq!(a.relays.iter().collect::<BTreeSet<_>>().len(), a.relays.len(), "announced relays unique");
        assert!(a.relays.iter().all(|r| RelayUrl::parse(r.as_str()).as_ref() == Ok(r)));
        assert_eq!(a.maintainers, ann.maintainers);
    }
}

fn key(n: u8) -> Id {
    [n % 8 + 1; 32]
}

/// The maintainer graph in `data` (pairs: author, maintainer), checked against a plain fixpoint.
fn check_maintainers(data: &[u8]) {
    let mut anns: Vec<Announcement> = Vec::new();
    for pair in data.chunks_exact(2).take(64) {
        let (author, m) = (key(pair[0]), key(pair[1]));
        match anns.iter_mut().find(|a| a.pubkey == author) {
            Some(a) => a.maintainers.push(m),
            None => anns.push(Announcement {
                id: [pair[0]; 32],
                pubkey: author,
                created_at: 1,
                maintainers: vec![m],
                lists_service: true,
                relays: Vec::new(),
                ignored_relays: IgnoredRelays::default(),
            }),
        }
    }
    let start: Vec<Id> = data.first().map(|b| key(*b)).into_iter().collect();
    let mut model: HashSet<Id> = start.iter().copied().collect();
    loop {
        let grown: HashSet<Id> = anns
            .iter()
            .filter(|a| model.contains(&a.pubkey))
            .flat_map(|a| a.maintainers.iter().copied())
            .chain(model.iter().copied())
            .collect();
        if grown.len() == model.len() {
            break;
        }
        model = grown;
    }
    assert_eq!(maintainer_closure(&anns, start), model, "maintainer closure");

    // Through the accepted view and the policy: a state event is accepted from the closure only.
    let mut view = AcceptedSet::new();
    for a in &anns {
        let mut tags = vec![vec!["d".to_string(), "r".to_string()]];
        tags.push(std::iter::once("maintainers".to_string()).chain(a.maintainers.iter().map(hex::encode)).collect());
        view.record(&Facts::from_parts(a.id, a.pubkey, 30617, 1, &tags), true);
    }
    let everyone = maintainer_closure(&anns, anns.iter().map(|a| a.pubkey));
    assert_eq!(maintainer_set(&view, "r"), everyone);
    let policy = Policy::new(RelayUrl::parse(SERVICE).expect("service"), false);
    for n in 0..8 {
        let state = Facts::from_parts([0xee; 32], key(n), 30618, 2, &[vec!["d", "r"]]);
        let accepted = matches!(policy.decide(&view, &state), Verdict::Accept(_));
        assert_eq!(accepted, everyone.contains(&key(n)), "state by author {n}");
    }
}

/// Fuzz entry point (see the module docs).
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let service = RelayUrl::parse(SERVICE).expect("service");
    let urls: Vec<RelayUrl> = text.lines().chain(std::iter::once(text.as_ref())).filter_map(check_url).collect();
    for a in urls.iter().take(8) {
        for b in urls.iter().take(8) {
            assert_eq!(a.same_endpoint(b), b.same_endpoint(a), "same_endpoint is symmetric: {a} {b}");
        }
    }
    for line in text.lines() {
        if let Some(c) = RepoCoord::parse(line) {
            assert_eq!(RepoCoord::parse(&c.to_string()).as_ref(), Some(&c), "coordinate round trip");
        }
    }
    let tags = tags_of(&text);
    check_facts(&tags, 30617, &service);
    check_facts(&tags, 1621, &service);
    check_maintainers(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_style_announcement_passes_the_checks() {
        let tags = r#"[["d","alpha"],["relays","wss://grasp.example.com","wss://r1.example.com","WSS://R1.example.com:443/"],["maintainers","4EDFCF9DFE6C0B5C83D1AB3F78D1B39A46EBAC6798E08E19761F5ED89EC83C10","nothex"],["clone","https://grasp.example.com/x.git"]]"#;
        check(tags.as_bytes());
        check(b"wss://relay.example.com/\nws://[::1]:7777/a/\n30617:0000000000000000000000000000000000000000000000000000000000000000:d:e");
    }
}
