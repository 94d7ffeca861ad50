//! Bad input at the front door: every field of a valid spec is mutated in turn (wrong
//! JSON types, empty, too long, wrong characters, paths and names of other namespaces,
//! unknown fields) and each mutation is sent to the real API server. Each must be refused
//! with a message naming the field; a mutation the schema admits is created for real and
//! must be reconciled to a failure reason, with no Secret written and no panic.

mod common;

use common::keyvault::KeyVault;
use common::operator::*;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

/// One mutation: where (as the API server spells the path), and the spec it makes.
struct Mutation {
    path: String,
    /// The name a refusal must mention: the path, or the field's own name.
    field: String,
    spec: Value,
}

fn base(vault_url: &str, secret: &str) -> Value {
    json!({
        "vaultUrl": vault_url,
        "identity": {"serviceAccountName": "app"},
        "refreshInterval": "1h",
        "suspend": false,
        "data": [{"key": "password", "remoteRef": {"name": secret, "version": "", "property": "", "decoding": "None"}}],
        "target": {"name": "app", "type": "Opaque", "labels": {"team": "a"}, "annotations": {"note": "x"}, "creationPolicy": "Owner"},
    })
}

/// Sets (or with `None` removes) the value at `path` (object keys and array indexes).
fn set(spec: &Value, path: &[&str], value: Option<Value>) -> Value {
    let mut spec = spec.clone();
    let mut cursor = &mut spec;
    for part in &path[..path.len() - 1] {
        cursor = match part.parse::<usize>() {
            Ok(i) => &mut cursor[i],
            Err(_) => &mut cursor[*part],
        };
    }
    let last = path[path.len() - 1];
    match (value, last.parse::<usize>()) {
        (Some(v), Ok(i)) => cursor[i] = v,
        (Some(v), Err(_)) => cursor[last] = v,
        (None, Ok(i)) => {
            cursor.as_array_mut().unwrap().remove(i);
        }
        (None, Err(_)) => {
            cursor.as_object_mut().unwrap().remove(last);
        }
    }
    spec
}

/// `spec.data[0].remoteRef.name` for `["data", "0", "remoteRef", "name"]`.
fn api_path(path: &[&str]) -> String {
    let mut out = "spec".to_owned();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(part);
        }
    }
    out
}

fn long(n: usize) -> String {
    "a".repeat(n)
}

/// Every mutation of the sweep.
fn mutations(spec: &Value) -> Vec<Mutation> {
    let strings = |bad: &[Value]| {
        let mut all: Vec<Value> = bad.to_vec();
        all.extend([json!(42), json!(true), json!({}), json!([]), json!(-1)]);
        all
    };
    let other_ns_names = [
        "other-team/app",
        "system:serviceaccount:kube-system:default",
        "../app",
        "kube-system.app/x",
        "app:kube-system",
    ];
    let mut fields: Vec<(Vec<&str>, Vec<Value>, bool)> = vec![
        (
            vec!["vaultUrl"],
            strings(&[
                json!(""),
                json!("http://my-vault.vault.azure.net"),
                json!("https://"),
                json!("https://my-vault.vault.azure.net/secrets"),
                json!("https://my-vault.vault.azure.net?api-version=1"),
                json!("https://my-vault.vault.azure.net#x"),
                json!("https://user:pw@my-vault.vault.azure.net"),
                json!("ftp://my-vault.vault.azure.net"),
                json!("my-vault.vault.azure.net"),
                json!(format!("https://{}.vault.azure.net", long(2050))),
                json!("https://my-vault.vault.azure.net/../other"),
                json!("file:///etc/passwd"),
                json!(" https://my-vault.vault.azure.net"),
                json!("https://my-vault.vault.azure.net\n"),
            ]),
            true,
        ),
        (
            vec!["identity"],
            vec![
                json!(42),
                json!("app"),
                json!([]),
                json!({}),
                json!({"serviceAccountName": "app", "managedIdentityClientId": uuid::Uuid::new_v4().to_string()}),
            ],
            false,
        ),
        (
            vec!["identity", "serviceAccountName"],
            strings(
                &[
                    json!(""),
                    json!("App"),
                    json!("app name"),
                    json!(long(254)),
                    json!("-app"),
                    json!("app-"),
                    json!("app_1"),
                    json!("*"),
                    json!("é"),
                ]
                .into_iter()
                .chain(other_ns_names.iter().map(|n| json!(n)))
                .collect::<Vec<_>>(),
            ),
            false,
        ),
        (
            vec!["identity", "managedIdentityClientId"],
            strings(&[
                json!(""),
                json!("not-a-uuid"),
                json!(uuid::Uuid::new_v4().simple().to_string()),
                json!(format!("{}x", uuid::Uuid::new_v4())),
                json!(format!("{{{}}}", uuid::Uuid::new_v4())),
            ]),
            false,
        ),
        (
            vec!["refreshInterval"],
            strings(&[
                json!(""),
                json!("1"),
                json!("1d"),
                json!("5s"),
                json!("9s"),
                json!("1.5h"),
                json!("-1h"),
                json!("1h 30m"),
                json!("h"),
                json!("10S"),
                json!("P1D"),
                json!(format!("1{}h", "0".repeat(40))),
            ]),
            false,
        ),
        (
            vec!["suspend"],
            vec![json!("true"), json!("yes"), json!(1), json!({}), json!([])],
            false,
        ),
        (
            vec!["data"],
            vec![
                json!([]),
                json!(42),
                json!("password"),
                json!({}),
                json!(
                    (0..101)
                        .map(|i| json!({"key": format!("k{i}"), "remoteRef": {"name": "s"}}))
                        .collect::<Vec<_>>()
                ),
                json!([{"key": "a", "remoteRef": {"name": "s"}}, {"key": "a", "remoteRef": {"name": "t"}}]),
            ],
            true,
        ),
        (
            vec!["data", "0"],
            vec![
                json!(42),
                json!("x"),
                json!([]),
                json!({}),
                json!({"key": "k"}),
            ],
            false,
        ),
        (
            vec!["data", "0", "key"],
            strings(&[
                json!(""),
                json!("a/b"),
                json!("a b"),
                json!(long(254)),
                json!("é"),
                json!("key\n"),
                json!("$HOME"),
                json!("../etc"),
            ]),
            true,
        ),
        (
            vec!["data", "0", "remoteRef"],
            vec![json!(42), json!("s"), json!([]), json!({})],
            true,
        ),
        (
            vec!["data", "0", "remoteRef", "name"],
            strings(&[
                json!(""),
                json!("a_b"),
                json!("a.b"),
                json!("a b"),
                json!(long(128)),
                json!("é"),
                json!("../other"),
                json!("name/version"),
            ]),
            true,
        ),
        (
            vec!["data", "0", "remoteRef", "version"],
            strings(&[
                json!("abc"),
                json!("0".repeat(31)),
                json!("0".repeat(33)),
                json!("g".repeat(32)),
                json!("A".repeat(32)),
                json!(format!("{}/", "0".repeat(32))),
            ]),
            false,
        ),
        (
            vec!["data", "0", "remoteRef", "property"],
            strings(&[json!(long(254))]),
            false,
        ),
        (
            vec!["data", "0", "remoteRef", "decoding"],
            strings(&[json!("base64"), json!("Hex"), json!(""), json!("none")]),
            false,
        ),
        (
            vec!["target"],
            vec![json!(42), json!("app"), json!([])],
            false,
        ),
        (
            vec!["target", "name"],
            strings(&[
                json!(""),
                json!("App"),
                json!("a/b"),
                json!("../kube-system"),
                json!(long(254)),
                json!("-a"),
                json!("a_b"),
                json!("kube-system/app"),
            ]),
            false,
        ),
        (
            vec!["target", "type"],
            strings(&[
                json!(""),
                json!("kubernetes.io/service-account-token"),
                json!("bootstrap.kubernetes.io/token"),
                json!(long(254)),
            ]),
            false,
        ),
        (
            vec!["target", "labels"],
            vec![
                json!({"vaultsync.io/managed-by": "x"}),
                json!({"vaultsync.io/source": "other/x"}),
                json!(42),
                json!("x"),
                json!([]),
                json!({"a": 42}),
                json!({"a": {}}),
            ],
            false,
        ),
        (
            vec!["target", "annotations"],
            vec![
                json!({"vaultsync.io/data-hash": "x"}),
                json!({"vaultsync.io/source": "other/x"}),
                json!(42),
                json!("x"),
                json!([]),
                json!({"a": 42}),
            ],
            false,
        ),
        (
            vec!["target", "creationPolicy"],
            strings(&[json!("owner"), json!("Adopt"), json!("")]),
            false,
        ),
    ];
    // Required fields: removing them is a mutation too.
    for (_, values, required) in &mut fields {
        if *required {
            values.push(Value::Null);
        }
    }
    let mut out = Vec::new();
    for (path, values, _) in fields {
        let field = path
            .iter()
            .rev()
            .find(|p| p.parse::<usize>().is_err())
            .unwrap()
            .to_string();
        for value in values {
            let spec = if value.is_null() {
                set(spec, &path, None)
            } else {
                set(spec, &path, Some(value))
            };
            out.push(Mutation {
                path: api_path(&path),
                field: field.clone(),
                spec,
            });
        }
    }
    // Unknown fields, among them a namespace anywhere: refused under strict validation,
    // never silently dropped.
    for (path, name) in [
        (vec![], "namespace"),
        (vec!["target"], "namespace"),
        (vec!["identity"], "namespace"),
        (vec!["data", "0", "remoteRef"], "vault"),
        (vec![], "tokenAudience"),
    ] {
        let mut full = path.clone();
        full.push(name);
        out.push(Mutation {
            path: api_path(&full),
            field: name.to_owned(),
            spec: set(spec, &full, Some(json!("kube-system"))),
        });
    }
    // Admitted by the schema, invalid all the same: only Key Vault, the identity or the
    // API server's Secret rules can tell. Each must end in a reason, with nothing written.
    for (path, value) in [
        (vec!["vaultUrl"], json!("https://example.com")),
        (vec!["identity", "serviceAccountName"], json!("ghost")),
        (
            vec!["data", "0", "remoteRef", "name"],
            json!("absent-from-the-vault"),
        ),
        (
            vec!["data", "0", "remoteRef", "property"],
            json!("password"),
        ),
        (vec!["data", "0", "remoteRef", "decoding"], json!("Base64")),
        (vec!["data", "0", "key"], json!("..")),
        (vec!["target", "type"], json!("kubernetes.io/tls")),
        (vec!["target", "labels"], json!({"bad key!": "x"})),
        (vec!["target", "annotations"], json!({"-bad-": "x"})),
    ] {
        let field = path.last().unwrap().to_string();
        out.push(Mutation {
            path: api_path(&path),
            field,
            spec: set(spec, &path, Some(value)),
        });
    }
    out
}

/// Sends a VaultSecret with `spec` as `kubectl create` does (POST, strict field
/// validation), as a dry run: `Err((code, message))` when refused. Not server-side apply:
/// the API server answers an applied object holding a wrong JSON type with a 500 ("failed
/// to create typed patch object") before validation runs, while a POST gets the schema's
/// own 422 naming the field.
async fn try_admit(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: &Value,
) -> Result<(), (u16, String)> {
    let body = serde_json::to_vec(&json!({
        "apiVersion": "vaultsync.io/v1alpha1",
        "kind": "VaultSecret",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    let request = http::Request::post(format!(
        "/apis/vaultsync.io/v1alpha1/namespaces/{namespace}/vaultsecrets?dryRun=All&fieldValidation=Strict&fieldManager=vaultsync-sweep"
    ))
    .header("content-type", "application/json")
    .body(body)
    .unwrap();
    match client.request::<Value>(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err((status.code, status.message)),
        Err(other) => panic!("expected an API answer, got {other:?}"),
    }
}

#[tokio::test]
async fn two_hundred_invalid_specs_are_refused_naming_the_field_or_fail_without_a_write() {
    let s = setup().await;
    let kv_name = unique("sweep");
    // A value that is neither JSON nor Base64, so property and decoding fail if admitted.
    KeyVault::first()
        .set(&kv_name, "sweep-value-not-json-not-base64!")
        .await;
    let client_id = operator_identity(&s.doubles, &[&kv_name]).await;
    // The base spec's identity works: each failure below is the mutation's doing.
    let app_id = uuid::Uuid::new_v4().to_string();
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "app", "annotations": {"azure.workload.identity/client-id": app_id}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(s.client.clone(), &s.ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    s.doubles.federate(&app_id, &s.ns.name, "app").await;
    s.doubles.grant(&app_id, &[&kv_name]).await;
    let spec = base(&env("VAULTSYNC_TEST_VAULT_URL"), &kv_name);
    // The base spec is admitted: each refusal below is the mutation's doing.
    try_admit(&s.client, &s.ns.name, "base", &spec)
        .await
        .expect("the base spec is valid");

    let all = mutations(&spec);
    assert!(all.len() >= 200, "only {} mutations", all.len());
    let mut admitted = Vec::new();
    let mut unnamed = Vec::new();
    for (i, m) in all.iter().enumerate() {
        match try_admit(&s.client, &s.ns.name, &format!("m{i}"), &m.spec).await {
            Ok(()) => admitted.push(i),
            Err((code, message)) => {
                assert!((400..500).contains(&code), "{}: {code} {message}", m.path);
                if !message.contains(&m.path) && !message.contains(&m.field) {
                    unnamed.push(format!("{}: {message}", m.path));
                }
            }
        }
    }
    println!(
        "admission sweep: {} mutations, {} refused, {} admitted by the schema: {:?}",
        all.len(),
        all.len() - admitted.len(),
        admitted.len(),
        admitted.iter().map(|&i| &all[i].path).collect::<Vec<_>>()
    );
    assert!(
        unnamed.is_empty(),
        "refusals that do not name the field:\n{}",
        unnamed.join("\n")
    );

    // What the schema admits is reconciled: a failure reason, nothing written, no panic.
    let operator = Operator::start(&s.ns.name, &client_id, &[]);
    // The unmutated spec syncs: the failures below are the mutations' doing.
    let mut base_spec = spec.clone();
    base_spec["target"]["name"] = json!("base-target");
    s.vsecs
        .create(&PostParams::default(), &vault_secret("base", base_spec))
        .await
        .unwrap();
    wait_reason(&s.vsecs, "base", "Synced").await;
    for &i in &admitted {
        let name = format!("admitted-{i}");
        let mut spec = all[i].spec.clone();
        // Each its own target, so one object's refusal is not another's conflict.
        spec["target"]["name"] = json!(name);
        s.vsecs
            .create(&PostParams::default(), &vault_secret(&name, spec))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", all[i].path));
    }
    for &i in &admitted {
        let name = format!("admitted-{i}");
        let vsec = wait_for(&s.vsecs, &name, "a Ready condition", |v| {
            v.status
                .as_ref()
                .and_then(|s| s.ready_condition())
                .is_some()
        })
        .await;
        let ready = vsec.status.as_ref().unwrap().ready_condition().unwrap();
        assert_eq!(ready.status, "False", "{}: {ready:?}", all[i].path);
        assert!(!ready.message.is_empty(), "{}", all[i].path);
        println!("  {} -> {}: {}", all[i].path, ready.reason, ready.message);
    }
    let written = Api::<Secret>::namespaced(s.client.clone(), &s.ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|secret| secret.metadata.name.as_deref() != Some("base-target"))
        .filter(|secret| {
            secret
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("vaultsync.io/managed-by"))
        })
        .count();
    assert_eq!(written, 0, "an invalid spec wrote a Secret");
    let logs = operator.logs();
    assert!(!logs.contains("panicked"), "the operator panicked");
}
