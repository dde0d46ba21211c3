//! A real strfry with `grasp-sync plugin` as its writePolicy stores exactly what GRASP accepts.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::strfry;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strfry_with_the_plugin_stores_exactly_the_accepted_fixture_events() {
    let Some(bin) = strfry::binary_or_skip("strfry_plugin") else { return };
    let work = tempfile::tempdir().unwrap();
    let relay = strfry::host_with_plugin(&bin, work.path(), SERVICE);
    let manifest = manifest();
    let events: Vec<Value> = fixture_events().into_iter().map(|(_, e)| e).collect();

    let results = strfry::publish(&relay.url(), &events).await;
    let mut accepted = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    for (id, ok, msg) in &results {
        let name = name_of(&manifest, id);
        if *ok {
            accepted.insert(name);
        } else {
            assert!(msg.starts_with("blocked: "), "{name}: {msg}");
            rejected.insert(name);
        }
    }
    let names = |key: &str| -> BTreeSet<String> {
        manifest[key].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(accepted, names("accept"), "OK true results; strfry log:\n{}", relay.log());
    assert_eq!(rejected, names("reject"));

    let stored: BTreeSet<String> = strfry::query(&relay.url(), json!({}))
        .await
        .iter()
        .map(|e| name_of(&manifest, e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(stored, names("accept"), "what strfry stored");
}
