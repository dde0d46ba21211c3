//! With a real strfry and `grasp-sync plugin` as its writePolicy: an owner deletes a repository
//! through strfry, then an issue about it is refused; the plugin killed (strfry restarts it) keeps
//! every decision. Skipped (passing) without a strfry binary.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nostr_relay_builder::prelude::Keys;
use serde_json::Value;
use support::daemon::{json, now, signed, t};
use support::strfry::{self, Strfry};
use support::*;

/// Publishes one event, retrying while strfry answers `error:` (its plugin restarting).
async fn publish_one(relay: &Strfry, event: &Value) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, ok, msg) = strfry::publish(&relay.url(), std::slice::from_ref(event)).await.remove(0);
        if ok || !msg.starts_with("error:") {
            return (ok, msg);
        }
        assert!(tokio::time::Instant::now() < deadline, "strfry kept answering {msg}; log:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills the plugin process strfry started with this config file (only that process).
fn kill_plugin(config: &std::path::Path) -> bool {
    let needle = config.display().to_string();
    let mut killed = false;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" plugin ") && cmd.contains(&needle) && cmd.contains("grasp-sync") {
            killed |=
                std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().is_ok_and(|s| s.success());
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_owner_deletes_a_repository_through_strfry_an_issue_about_it_is_refused() {
    let Some(bin) = strfry::binary_or_skip("strfry_deletion") else { return };
    let work = tempfile::tempdir().unwrap();
    let relay = strfry::host_with_plugin(&bin, work.path(), SERVICE);
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let at = now() - 100;
    let ann = signed(&alice, 30617, vec![t("d", "gone"), vec!["relays".into(), SERVICE.into()]], "", at);
    let coord = format!("30617:{}:gone", alice.public_key().to_hex());
    let issue = signed(&bob, 1621, vec![t("a", &coord)], "first", at + 1);
    assert!(publish_one(&relay, &json(&ann)).await.0);
    assert!(publish_one(&relay, &json(&issue)).await.0);

    let deletion = signed(&alice, 5, vec![t("a", &coord)], "moved away", at + 2);
    assert!(publish_one(&relay, &json(&deletion)).await.0, "log:\n{}", relay.log());
    let late = signed(&bob, 1621, vec![t("a", &coord)], "second", at + 3);
    let (ok, msg) = publish_one(&relay, &json(&late)).await;
    assert!(!ok && msg.starts_with("blocked:"), "issue about a deleted repository: {ok} {msg}");
    // A copy of the deleted announcement is refused too.
    let (ok, msg) = publish_one(&relay, &json(&ann)).await;
    assert!(!ok, "deleted announcement stored again: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_strfry_restarts_decides_the_fixture_input_as_before() {
    let Some(bin) = strfry::binary_or_skip("strfry_deletion") else { return };
    let work = tempfile::tempdir().unwrap();
    let relay = strfry::host_with_plugin(&bin, work.path(), SERVICE);
    let config = work.path().join("grasp-sync.toml");
    let events: Vec<Value> = fixture_events().into_iter().map(|(_, e)| e).collect();
    let before: BTreeMap<String, bool> =
        strfry::publish(&relay.url(), &events).await.into_iter().map(|(id, ok, _)| (id, ok)).collect();

    // Kill the plugin; strfry starts it again on the next write, and it reads strfry's database.
    assert!(kill_plugin(&config), "plugin process found");
    let (alice_repo, alice_pk) = {
        let ann = events.iter().find(|e| e["kind"] == 30617 && before[e["id"].as_str().unwrap()]).unwrap();
        let d = ann["tags"].as_array().unwrap().iter().find(|t| t[0] == "d").unwrap()[1].as_str().unwrap().to_string();
        (d, ann["pubkey"].as_str().unwrap().to_string())
    };
    let carol = Keys::generate();
    let probe = signed(&carol, 1621, vec![t("a", &format!("30617:{alice_pk}:{alice_repo}"))], "after restart", now());
    let (ok, msg) = publish_one(&relay, &json(&probe)).await;
    assert!(ok, "the restarted plugin still knows the repository: {msg}; log:\n{}", relay.log());

    // The same fixture input, as strfry sends it, to a plugin started now: the same decisions.
    let mut plugin = PluginProc::start(&config);
    let input = std::fs::read_to_string(format!("{FIXTURES}/plugin-input.jsonl")).unwrap();
    for line in input.lines() {
        let answer = plugin.ask(line.as_bytes());
        let id = answer["id"].as_str().unwrap().to_string();
        let accepted = answer["action"] == "accept";
        assert_eq!(Some(&accepted), before.get(&id), "{}: {answer}", name_of(&manifest(), &id));
    }
    assert!(plugin.finish().success());
}
