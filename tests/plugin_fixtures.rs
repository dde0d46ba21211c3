//! The real plugin binary, fed what a real strfry sent it, decides as the manifest says.

mod support;

use support::*;

#[test]
fn captured_strfry_requests_get_the_manifest_decisions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let manifest = manifest();
    let mut plugin = PluginProc::start(&config);
    let input = std::fs::read_to_string(format!("{FIXTURES}/plugin-input.jsonl")).unwrap();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for line in input.lines() {
        let request: serde_json::Value = serde_json::from_str(line).unwrap();
        let answer = plugin.ask(line.as_bytes());
        assert_eq!(answer["id"], request["event"]["id"], "answers come in request order");
        let name = name_of(&manifest, answer["id"].as_str().unwrap());
        match answer["action"].as_str().unwrap() {
            "accept" => accepted.push(name),
            "reject" => {
                assert!(answer["msg"].as_str().unwrap().starts_with("blocked: "), "{answer}");
                rejected.push(name);
            }
            other => panic!("unexpected action {other}"),
        }
    }
    let names = |key: &str| {
        let mut v: Vec<String> =
            manifest[key].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    accepted.sort();
    rejected.sort();
    assert_eq!(accepted, names("accept"));
    assert_eq!(rejected, names("reject"));
    assert!(plugin.finish().success(), "plugin exits 0 when strfry closes its stdin");
}

#[test]
fn answers_are_single_lines_under_strfrys_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = PluginProc::start(&write_config(dir.path(), ""));
    let input = std::fs::read_to_string(format!("{FIXTURES}/plugin-input.jsonl")).unwrap();
    for line in input.lines() {
        let answer = plugin.ask(line.as_bytes());
        assert!(answer.to_string().len() < 8192);
        assert_eq!(answer.as_object().unwrap().len(), 3, "exactly id, action, msg: {answer}");
    }
}
