//! The diff: what to request next. The only place new L2/L3 subscriptions are decided.
//!
//! Per connected relay: `target − pending − confirmed`. Anything already confirmed or in flight
//! is never requested again; once every returned action is confirmed, the diff is empty.

use crate::engine::pending::PendingSyncIndex;
use crate::engine::relays::RelaySyncIndex;
use crate::engine::targets::{ItemSet, Targets};
use crate::policy::RelayUrl;

/// New items to subscribe on one relay (live + historic), as one batch per layer: repositories
/// (L2) and root events (L3). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddFilters {
    pub relay: RelayUrl,
    pub items: ItemSet,
}

/// `target − pending − confirmed` for every target relay that is connected (status Syncing,
/// Connected or ConnectedHistoricSyncFailures). Relays not connected get nothing here: see
/// [`relays_to_connect`]. Output is in relay URL order.
pub fn compute_actions(targets: &Targets, pending: &PendingSyncIndex, relays: &RelaySyncIndex) -> Vec<AddFilters> {
    let mut out = Vec::new();
    for (url, target) in &targets.relays {
        let Some(state) = relays.get(url) else { continue };
        if !state.status.is_connected() {
            continue;
        }
        let mut want = target.minus(&state.confirmed);
        if !want.is_empty() {
            want.remove_all(&pending.pending_items(url));
        }
        if !want.is_empty() {
            out.push(AddFilters { relay: url.clone(), items: want });
        }
    }
    out
}

/// Confirmed items no longer targeted (a repository that dropped this relay, a deleted root),
/// per relay. Their live filters stay until the next consolidation or fresh start; callers may
/// `unconfirm` them so the relay can be closed once nothing is targeted.
pub fn stale_items(targets: &Targets, relays: &RelaySyncIndex) -> Vec<(RelayUrl, ItemSet)> {
    let empty = ItemSet::new();
    relays
        .iter()
        .filter_map(|(url, state)| {
            let target = targets.get(url).unwrap_or(&empty);
            let stale = state.confirmed.minus(target);
            (!stale.is_empty()).then(|| (url.clone(), stale))
        })
        .collect()
}

/// Target relays that are unknown to the relay index or Disconnected: register and dial them
/// (subject to their health backoff). URL order.
pub fn relays_to_connect(targets: &Targets, relays: &RelaySyncIndex) -> Vec<RelayUrl> {
    targets
        .relays
        .keys()
        .filter(|url| relays.get(url).is_none_or(|s| s.status == crate::engine::relays::RelayStatus::Disconnected))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layers::Layer;
    use crate::engine::pending::{BatchSpec, Method};
    use crate::engine::relays::RelayStatus;
    use crate::policy::RepoCoord;
    use proptest::prelude::*;

    fn url(n: u8) -> RelayUrl {
        RelayUrl::parse(&format!("wss://r{n}.example")).unwrap()
    }

    fn items(repos: &[u8], roots: &[u8]) -> ItemSet {
        ItemSet {
            repos: repos.iter().map(|n| RepoCoord { pubkey: [*n; 32], d: "d".into() }).collect(),
            root_events: roots.iter().map(|n| [*n; 32]).collect(),
        }
    }

    fn connected(relays: &mut RelaySyncIndex, u: &RelayUrl) {
        relays.register(u, false);
        relays.mark_connected(u, 1, true);
    }

    fn batch(items: ItemSet) -> BatchSpec {
        BatchSpec { layer: Layer::Roots, items, live: true, historic: true, since: None, method: Method::Req }
    }

    #[test]
    fn diff_skips_confirmed_pending_and_unconnected_relays() {
        let mut targets = Targets::default();
        targets.relays.insert(url(1), items(&[1, 2], &[1, 2, 3]));
        targets.relays.insert(url(2), items(&[1], &[]));
        targets.relays.insert(url(3), items(&[1], &[]));
        let mut relays = RelaySyncIndex::new();
        connected(&mut relays, &url(1));
        connected(&mut relays, &url(2));
        relays.register(&url(3), false);
        relays.confirm(&url(1), &items(&[1], &[1]));
        relays.confirm(&url(2), &items(&[1], &[]));
        let mut pending = PendingSyncIndex::new();
        pending.add(&url(1), batch(items(&[], &[2])), 1);
        let actions = compute_actions(&targets, &pending, &relays);
        assert_eq!(actions, vec![AddFilters { relay: url(1), items: items(&[2], &[3]) }]);
        assert_eq!(relays_to_connect(&targets, &relays), vec![url(3)]);
    }

    #[test]
    fn stale_items_are_confirmed_but_no_longer_targeted() {
        let mut targets = Targets::default();
        targets.relays.insert(url(1), items(&[1], &[]));
        let mut relays = RelaySyncIndex::new();
        connected(&mut relays, &url(1));
        connected(&mut relays, &url(2));
        relays.confirm(&url(1), &items(&[1, 2], &[]));
        relays.confirm(&url(2), &items(&[], &[9]));
        assert_eq!(stale_items(&targets, &relays), vec![(url(1), items(&[2], &[])), (url(2), items(&[], &[9]))]);
    }

    type World = Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)>;

    fn small() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..12, 0..8)
    }

    /// Per relay: target repos/roots, confirmed repos/roots, pending repos/roots.
    fn world() -> impl Strategy<Value = World> {
        proptest::collection::vec((small(), small(), small(), small(), small(), small()), 1..5)
    }

    fn build(w: &World) -> (Targets, PendingSyncIndex, RelaySyncIndex) {
        let mut targets = Targets::default();
        let mut relays = RelaySyncIndex::new();
        let mut pending = PendingSyncIndex::new();
        for (i, (tr, tt, cr, ct, pr, pt)) in w.iter().enumerate() {
            let u = url(i as u8);
            targets.relays.insert(u.clone(), items(tr, tt));
            connected(&mut relays, &u);
            relays.confirm(&u, &items(cr, ct));
            if !pr.is_empty() || !pt.is_empty() {
                pending.add(&u, batch(items(pr, pt)), 1);
            }
        }
        (targets, pending, relays)
    }

    proptest! {
        #[test]
        fn never_requests_confirmed_or_pending_items(w in world()) {
            let (targets, pending, relays) = build(&w);
            for a in compute_actions(&targets, &pending, &relays) {
                prop_assert!(!a.items.is_empty());
                prop_assert!(targets.get(&a.relay).unwrap().contains_all(&a.items));
                prop_assert!(a.items.intersect(&relays.confirmed(&a.relay)).is_empty());
                prop_assert!(a.items.intersect(&pending.pending_items(&a.relay)).is_empty());
            }
        }

        #[test]
        fn confirming_every_action_and_pending_batch_empties_the_diff(w in world()) {
            let (targets, mut pending, mut relays) = build(&w);
            let actions = compute_actions(&targets, &pending, &relays);
            // Idempotent: asking again without changes gives the same answer.
            prop_assert_eq!(&actions, &compute_actions(&targets, &pending, &relays));
            for a in &actions {
                let id = pending.add(&a.relay, batch(a.items.clone()), 2);
                pending.add_subscription(&a.relay, id, "s");
            }
            prop_assert!(compute_actions(&targets, &pending, &relays).is_empty(), "pending work is not re-requested");
            for (u, _) in targets.relays.iter() {
                for b in pending.clear_relay(u) {
                    relays.confirm(u, &b.spec.items);
                }
            }
            prop_assert!(compute_actions(&targets, &pending, &relays).is_empty());
            for (u, t) in &targets.relays {
                prop_assert!(t.minus(&relays.confirmed(u)).is_empty());
            }
        }
    }

    #[test]
    fn unconnected_relays_are_not_diffed() {
        let mut targets = Targets::default();
        targets.relays.insert(url(1), items(&[1], &[]));
        let mut relays = RelaySyncIndex::new();
        relays.register(&url(1), false);
        relays.mark_connecting(&url(1));
        assert!(compute_actions(&targets, &PendingSyncIndex::new(), &relays).is_empty());
        assert_eq!(relays.status(&url(1)), RelayStatus::Connecting);
        assert!(relays_to_connect(&targets, &relays).is_empty(), "a dial is already under way");
    }
}
