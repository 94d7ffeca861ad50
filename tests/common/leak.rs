//! The leak scan's inputs and the scanner itself.
//!
//! Every test process appends what it seeds into Key Vault to one registry under the
//! environment's state directory, and keeps what the operator showed the world: its logs,
//! `/metrics` as fetched, and each test namespace's Events and VaultSecrets (dumped when the
//! namespace is deleted). `tests/leak_scan.rs` then looks for every registered value, in
//! the forms it could leak in, and for every token the Azure doubles issued.
//!
//! Layout of `$VAULTSYNC_TESTENV_DIR/leak-scan/` (`hack/test.sh` empties it at the start of
//! a run): `values.jsonl` (one JSON string a line: which test registered it, the value),
//! `operator-logs/`, `metrics/`, `objects/`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use std::io::Write as _;
use std::path::PathBuf;

/// Needles shorter than this are not searched for: a value like `v1` or `true` matches
/// innocent text everywhere. Tests that check leaks seed longer values.
pub const MIN_NEEDLE_LEN: usize = 8;

/// The run's leak-scan directory (`$VAULTSYNC_TESTENV_DIR/leak-scan`); `None` outside the
/// environment (unit tests of the scanner).
pub fn root() -> Option<PathBuf> {
    let base = std::env::var_os("VAULTSYNC_TESTENV_DIR")?;
    Some(PathBuf::from(base).join("leak-scan"))
}

/// One part of the run's leak-scan directory, created on first use; `None` outside the
/// environment.
pub fn dir(part: &str) -> Option<PathBuf> {
    let dir = root()?.join(part);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Records a value a test seeded, under the name of the test that seeded it (a test's
/// thread is named after it).
pub fn register_value(value: &str) {
    let Some(dir) = dir("") else { return };
    let origin = format!(
        "{} {}",
        std::env::args()
            .next()
            .and_then(|a| a.rsplit('/').next().map(str::to_owned))
            .unwrap_or_default(),
        std::thread::current().name().unwrap_or("?")
    );
    let line = serde_json::json!({ "origin": origin, "value": value }).to_string() + "\n";
    // One write of one line with O_APPEND: lines of concurrent test processes never mix.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("values.jsonl"))
        .expect("open the leak registry");
    file.write_all(line.as_bytes())
        .expect("append to the leak registry");
}

/// A registered value, as read back.
#[derive(Debug, Clone)]
pub struct Registered {
    pub origin: String,
    pub value: String,
}

/// The values registered under the leak-scan directory `root` (the run's, or a planted one).
pub fn registered_values(root: &std::path::Path) -> Vec<Registered> {
    let text = std::fs::read_to_string(root.join("values.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Registered {
            origin: v["origin"].as_str().unwrap_or_default().to_owned(),
            value: v["value"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// What is searched for, and what it is (never the secret itself: the report names the
/// needle by its kind and origin).
#[derive(Debug, Clone)]
pub struct Needle {
    pub text: String,
    pub what: String,
}

/// The forms in which `value` could leak: as it is, JSON- or Debug-escaped (how structured
/// logs and `{:?}` print it), and Base64 in both alphabets (how Secret data travels); each
/// Base64 form without padding, which also finds the padded one. A JSON object's string
/// members count too, since `property` writes them alone.
pub fn value_needles(value: &Registered) -> Vec<Needle> {
    let mut texts = vec![(value.value.clone(), "value")];
    if let Ok(serde_json::Value::Object(members)) =
        serde_json::from_str::<serde_json::Value>(value.value.trim_start_matches('\u{feff}'))
    {
        for member in members.values() {
            if let Some(text) = member.as_str() {
                texts.push((text.to_owned(), "JSON member of a value"));
            }
        }
    }
    let mut needles = Vec::new();
    for (text, kind) in texts {
        let json = serde_json::to_string(&text).unwrap();
        let debug = format!("{text:?}");
        for (form, how) in [
            (text.clone(), ""),
            (json[1..json.len() - 1].to_owned(), ", JSON-escaped"),
            (debug[1..debug.len() - 1].to_owned(), ", Debug-escaped"),
            (STANDARD_NO_PAD.encode(&text), ", Base64"),
            (URL_SAFE_NO_PAD.encode(&text), ", URL-safe Base64"),
        ] {
            if form.len() >= MIN_NEEDLE_LEN && !needles.iter().any(|n: &Needle| n.text == form) {
                needles.push(Needle {
                    text: form,
                    what: format!("{kind}{how} registered by {}", value.origin),
                });
            }
        }
    }
    needles
}

/// A JWT, whole and by its payload and signature alone (a log that shortens a token keeps
/// one of them; the header is the same in every token, so it proves nothing).
pub fn token_needles(token: &str, source: &str) -> Vec<Needle> {
    let mut needles = vec![Needle {
        text: token.to_owned(),
        what: format!("a token {source}"),
    }];
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 3 {
        for (part, name) in [(parts[1], "payload"), (parts[2], "signature")] {
            if part.len() >= MIN_NEEDLE_LEN {
                needles.push(Needle {
                    text: part.to_owned(),
                    what: format!("the {name} of a token {source}"),
                });
            }
        }
    }
    needles
}

/// Splits `needles` into those worth searching for and how many were left out because
/// the file `vocabulary` (the operator's binary: its own messages and its libraries') holds
/// them. A value such as `original` or `re-created` can be the operator's own word in a
/// log line or an Event, so a hit on it would prove nothing; what is left is text the
/// operator could only have printed by printing the value.
///
/// GNU grep does the search (`-F -o`: one pass over a binary of hundreds of megabytes,
/// which the unoptimized test build of a matcher would take minutes for). `-o` reports the
/// leftmost longest match, so a needle found only inside another needle's match counts as
/// held too. Needles with a line break cannot be grep patterns and are kept.
pub fn distinctive(needles: Vec<Needle>, vocabulary: &std::path::Path) -> (Vec<Needle>, usize) {
    let patterns: Vec<&str> = needles
        .iter()
        .map(|n| n.text.as_str())
        .filter(|t| !t.contains('\n'))
        .collect();
    if patterns.is_empty() {
        return (needles, 0);
    }
    let file = std::env::temp_dir().join(format!(
        "leak-scan-patterns-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, patterns.join("\n") + "\n").expect("write the grep patterns");
    let output = std::process::Command::new("grep")
        .args(["-a", "-o", "-F", "-f"])
        .arg(&file)
        .arg(vocabulary)
        .output()
        .expect("run grep");
    let _ = std::fs::remove_file(&file);
    // 0: matches, 1: none; anything else is grep failing, which must not pass as "none".
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "grep over {}: {}",
        vocabulary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let held: std::collections::HashSet<&[u8]> = output.stdout.split(|&b| b == b'\n').collect();
    let is_held = |needle: &Needle| {
        held.iter().any(|m| {
            m.windows(needle.text.len())
                .any(|w| w == needle.text.as_bytes())
        })
    };
    let (common, kept): (Vec<Needle>, Vec<Needle>) = needles.into_iter().partition(is_held);
    (kept, common.len())
}

/// One place a needle was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Where: a file and line, or an object.
    pub place: String,
    pub line: usize,
    pub what: String,
}

/// Every occurrence of every needle in `text` (values may span lines), reported by place
/// and line. One pass over the text for all needles: a run's logs are tens of megabytes.
pub fn scan(place: &str, text: &str, needles: &[Needle]) -> Vec<Hit> {
    if needles.is_empty() {
        return Vec::new();
    }
    let matcher = aho_corasick::AhoCorasick::new(needles.iter().map(|n| n.text.as_bytes()))
        .expect("an automaton of the needles");
    let mut hits: Vec<Hit> = matcher
        .find_overlapping_iter(text)
        .map(|m| Hit {
            place: place.to_owned(),
            line: 1 + text[..m.start()].matches('\n').count(),
            what: needles[m.pattern().as_usize()].what.clone(),
        })
        .collect();
    hits.sort_by_key(|h| h.line);
    hits
}

/// The report of a scan's hits: one line each, the place and what was found, never the
/// secret itself.
pub fn report(hits: &[Hit]) -> String {
    hits.iter()
        .map(|h| format!("{}:{}: {}", h.place, h.line, h.what))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keeps what a test namespace's objects showed (Events, VaultSecrets with their status)
/// before the namespace goes. Best effort: a namespace whose CRD or API is gone has
/// nothing to keep.
pub fn keep_namespace_objects(namespace: &str) {
    let Some(dir) = dir("objects") else { return };
    for (resource, file) in [
        ("events.events.k8s.io", "events"),
        ("vaultsecrets.vaultsync.io", "vaultsecrets"),
    ] {
        let output = std::process::Command::new("kubectl")
            .args(["get", resource, "-n", namespace, "-o", "json"])
            .stderr(std::process::Stdio::null())
            .output();
        if let Ok(output) = output
            && output.status.success()
        {
            let _ = std::fs::write(dir.join(format!("{namespace}.{file}.json")), output.stdout);
        }
    }
}
