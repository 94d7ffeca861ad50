//! No value, no token, anywhere: every value a test seeded into Key Vault (and its
//! escaped and Base64 forms) and every token the Azure doubles issued or were shown is
//! searched for in everything the operator showed during the run: its logs (text and
//! JSON, debug level, with any panic message, which goes to the same stream), every
//! `/metrics` fetched, every Event and every VaultSecret status (kept as each test
//! namespace was deleted, and those still on the API server).
//!
//! `make test` runs this file once more after every other test (with
//! `VAULTSYNC_LEAK_SCAN_FINAL=1`), so that scan covers the whole run; within the workspace
//! run it covers whatever has run so far. The unit tests below plant hits to prove the
//! scanner finds them.

mod common;

use common::leak::{self, Hit, Needle, Registered};
use common::operator::operator_binary;
use common::*;
use kube::Api;
use kube::api::ListParams;
use std::path::Path;

/// The files of one part of a leak-scan directory, as `(path, text)`.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter_map(|p| {
                    let bytes = std::fs::read(&p).ok()?;
                    Some((
                        p.display().to_string(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every token the Azure doubles issued or were shown, as `(token, where it came from)`.
async fn ledger_tokens() -> Vec<(String, &'static str)> {
    let ledger: serde_json::Value =
        reqwest::get(format!("{}/tokens", env("VAULTSYNC_TEST_AZURE_ADMIN_URL")))
            .await
            .expect("admin API reachable")
            .json()
            .await
            .expect("the token ledger");
    let mut tokens = Vec::new();
    for (field, source) in [
        ("issued", "the doubles issued"),
        ("assertions", "presented to Entra (a ServiceAccount token)"),
    ] {
        for token in ledger[field].as_array().into_iter().flatten() {
            if let Some(token) = token.as_str() {
                tokens.push((token.to_owned(), source));
            }
        }
    }
    tokens
}

/// What one scan looked at and found.
struct Scan {
    hits: Vec<Hit>,
    /// Operator logs, JSON and text.
    logs: (usize, usize),
    metrics: usize,
    objects: usize,
    summary: String,
}

/// Scans the leak-scan directory `root` (operator logs, `/metrics` captures, kept objects)
/// and the Events and VaultSecrets still on the API server for `values` and `tokens`.
/// Needles the operator's binary holds are left out (see [`leak::distinctive`]).
async fn scan_run(
    client: &kube::Client,
    root: &Path,
    values: &[Registered],
    tokens: &[(String, &str)],
) -> Scan {
    let mut needles: Vec<Needle> = values.iter().flat_map(leak::value_needles).collect();
    let short = values
        .iter()
        .filter(|v| v.value.len() < leak::MIN_NEEDLE_LEN)
        .count();
    for (token, source) in tokens {
        needles.extend(leak::token_needles(token, source));
    }
    let (needles, common) = leak::distinctive(needles, Path::new(&operator_binary()));

    let logs = files(&root.join("operator-logs"));
    let metrics = files(&root.join("metrics"));
    let mut objects = files(&root.join("objects"));
    // What is still on the API server: every Event and every VaultSecret, cluster-wide.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list Events");
    objects.push((
        "live Events".into(),
        serde_json::to_string_pretty(&events.items).unwrap(),
    ));
    if let Ok(vsecs) = Api::<vaultsync::api::VaultSecret>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        objects.push((
            "live VaultSecrets".into(),
            serde_json::to_string_pretty(&vsecs.items).unwrap(),
        ));
    }

    let mut hits: Vec<Hit> = Vec::new();
    let mut bytes = 0;
    for (place, text) in logs.iter().chain(&metrics).chain(&objects) {
        bytes += text.len();
        hits.extend(leak::scan(place, text, &needles));
    }
    let json = logs
        .iter()
        .filter(|(p, _)| p.ends_with(".json.log"))
        .count();
    let text = logs
        .iter()
        .filter(|(p, _)| p.ends_with(".text.log"))
        .count();
    let summary = format!(
        "{} values registered ({short} shorter than {} bytes not searched), {} tokens, {} needles searched ({common} left out: the operator's binary holds them); {} operator logs ({json} JSON, {text} text), {} /metrics captures, {} object dumps, {} MB scanned; {} hits",
        values.len(),
        leak::MIN_NEEDLE_LEN,
        tokens.len(),
        needles.len(),
        logs.len(),
        metrics.len(),
        objects.len(),
        bytes / 1_000_000,
        hits.len(),
    );
    Scan {
        hits,
        logs: (json, text),
        metrics: metrics.len(),
        objects: objects.len(),
        summary,
    }
}

#[tokio::test]
async fn no_registered_value_or_issued_token_appears_in_anything_the_operator_showed() {
    let final_scan = std::env::var("VAULTSYNC_LEAK_SCAN_FINAL").is_ok_and(|v| v == "1");
    let client = kube_client().await;
    let root = leak::root().expect("VAULTSYNC_TESTENV_DIR is set (source .testenv/env.sh)");
    let values = leak::registered_values(&root);
    let tokens = ledger_tokens().await;
    let scan = scan_run(&client, &root, &values, &tokens).await;
    println!("leak scan: {}", scan.summary);
    assert!(
        scan.hits.is_empty(),
        "secret material found where the operator writes:\n{}",
        leak::report(&scan.hits)
    );
    if final_scan {
        // After a whole run an empty input means the collection broke, not that nothing
        // leaked.
        assert!(
            values.len() > 100,
            "only {} values registered",
            values.len()
        );
        assert!(
            tokens.iter().any(|(_, s)| s.contains("issued"))
                && tokens.iter().any(|(_, s)| s.contains("presented")),
            "no tokens in the ledger"
        );
        assert!(scan.logs.0 > 0, "no JSON operator log kept");
        assert!(scan.logs.1 > 0, "no text operator log kept");
        assert!(scan.metrics > 0, "no /metrics captured");
        assert!(scan.objects > 2, "no namespace objects kept");
    }
}

/// The whole scan, on a planted run: a value's Base64 in an operator log, a token's
/// payload in a kept object dump and the value itself in a live Event are each found and
/// reported by place, never by the secret; a value the operator's binary holds is not
/// searched for (it would match the operator's own words), and the clean run has no hit.
#[tokio::test]
async fn a_planted_value_or_token_fails_the_scan_where_it_was_planted() {
    use base64::Engine as _;
    let client = kube_client().await;
    let root = std::path::PathBuf::from(env("VAULTSYNC_TESTENV_DIR")).join(format!(
        "leak-scan-planted-{}",
        uuid::Uuid::new_v4().simple()
    ));
    for part in ["operator-logs", "metrics", "objects"] {
        std::fs::create_dir_all(root.join(part)).unwrap();
    }
    let _cleanup = RemoveOnDrop(root.clone());
    let planted = format!("planted-{}", uuid::Uuid::new_v4().simple());
    let values = [registered(&planted), registered("re-created")];
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"{}"}}"#, uuid::Uuid::new_v4())),
        uuid::Uuid::new_v4().simple()
    );
    let tokens = [(token.clone(), "planted")];
    let log = root.join("operator-logs").join("planted.text.log");
    // The operator's own words, among them the value `re-created`: no hit.
    std::fs::write(&log, "INFO re-created Secret 'app' to change its type\n").unwrap();
    std::fs::write(root.join("metrics").join("m.txt"), "vaultsync_up 1\n").unwrap();
    let clean = scan_run(&client, &root, &values, &tokens).await;
    println!("clean: {}", clean.summary);
    assert!(clean.hits.is_empty(), "{}", leak::report(&clean.hits));

    let encoded = base64::engine::general_purpose::STANDARD.encode(&planted);
    std::fs::write(
        &log,
        format!("INFO re-created Secret 'app'\nDEBUG data {{\"k\": \"{encoded}\"}}\n"),
    )
    .unwrap();
    let payload = token.split('.').nth(1).unwrap();
    std::fs::write(
        root.join("objects").join("ns.events.json"),
        format!("{{\"note\": \"exchanged …{payload}\"}}"),
    )
    .unwrap();
    let ns = TempNamespace::create(&client).await;
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "planted"},
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "app", "namespace": ns.name},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "vaultsync.io/leak-scan-test",
        "reportingInstance": "test",
        "action": "Sync",
        "reason": "Planted",
        "type": "Normal",
        "note": format!("value {planted}"),
    }))
    .unwrap();
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns.name)
        .create(&Default::default(), &event)
        .await
        .unwrap();
    let found = scan_run(&client, &root, &values, &tokens).await;
    println!("planted: {}", found.summary);
    let report = leak::report(&found.hits);
    let places: Vec<(String, usize)> = found
        .hits
        .iter()
        .map(|h| (h.place.rsplit('/').next().unwrap().to_owned(), h.line))
        .collect();
    assert!(places.contains(&("planted.text.log".into(), 2)), "{report}");
    assert!(
        places.iter().any(|(p, _)| p == "ns.events.json"),
        "{report}"
    );
    assert!(places.iter().any(|(p, _)| p == "live Events"), "{report}");
    assert_eq!(found.hits.len(), 3, "{report}");
    assert!(!report.contains(&planted) && !report.contains(&encoded) && !report.contains(payload));
}

/// Removes a planted leak-scan directory when the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn registered(value: &str) -> Registered {
    Registered {
        origin: "planted".into(),
        value: value.into(),
    }
}

#[test]
fn the_scanner_finds_a_planted_value_in_each_form_and_reports_where_not_what() {
    let value = registered("s3cr\"et-planted\nvalue");
    let needles = leak::value_needles(&value);
    let json_line = r#"{"level":"DEBUG","fields":{"message":"got s3cr\"et-planted\nvalue"}}"#;
    let base64_line = "data: czNjciJldC1wbGFudGVkCnZhbHVl";
    let log = format!("first line\n{json_line}\nclean\n{base64_line}\n");
    let hits = leak::scan("op.log", &log, &needles);
    let lines: Vec<usize> = hits.iter().map(|h| h.line).collect();
    assert_eq!(lines, vec![2, 4], "{hits:?}");
    assert!(hits[0].what.contains("JSON-escaped"), "{hits:?}");
    assert!(hits[1].what.contains("Base64"), "{hits:?}");
    // As it is, across a line break (a text log prints the value raw).
    let raw = leak::scan("op.log", "a\nx s3cr\"et-planted\nvalue y\n", &needles);
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].line, 2);
    let report = leak::report(&hits);
    assert!(report.starts_with("op.log:2: "), "{report}");
    assert!(!report.contains("et-planted") && !report.contains("czNjci"));
    assert!(leak::scan("clean.log", "nothing here\n", &needles).is_empty());
}

#[test]
fn the_scanner_finds_a_json_members_text_and_a_shortened_token() {
    let value = registered(r#"{"user":"admin","password":"correct-horse-battery"}"#);
    let needles = leak::value_needles(&value);
    let hits = leak::scan("events", "note: correct-horse-battery", &needles);
    assert_eq!(hits.len(), 1);
    assert!(hits[0].what.contains("JSON member"));

    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjbGllbnQtMSIsImV4cCI6MX0.c2lnbmF0dXJlLW9mLWEtdG9rZW4tMTIzNDU2Nzg5MA";
    let needles = leak::token_needles(token, "issued");
    let truncated = "Authorization: Bearer …c2lnbmF0dXJlLW9mLWEtdG9rZW4tMTIzNDU2Nzg5MA";
    assert_eq!(leak::scan("log", truncated, &needles).len(), 1);
    // The header alone is no hit: every token shares it.
    assert!(leak::scan("log", "eyJhbGciOiJIUzI1NiJ9", &needles).is_empty());
}

#[test]
fn values_too_short_to_search_for_are_skipped() {
    assert!(leak::value_needles(&registered("v1")).is_empty());
    // Eight bytes and more are searched, Base64 forms included.
    let needles = leak::value_needles(&registered("12345678"));
    assert!(needles.iter().any(|n| n.text == "12345678"));
    assert!(needles.iter().any(|n| n.text == "MTIzNDU2Nzg"));
}
