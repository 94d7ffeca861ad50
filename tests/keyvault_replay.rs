//! Replays the live Azure Key Vault traffic in `../shared/keyvault-conformance/recordings`
//! against the environment's replay vault and reports every answer that differs from the
//! real service's. The normalisation follows that directory's README (vault hosts, version
//! ids, skiptokens, backup blobs, times, timing-dependent repeats). Only the REST API is
//! used, so the harness holds any Key Vault implementation to the recordings, and the
//! recordings decide where the two disagree.

mod common;

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The api-version of the early-2025 recordings; the emulator serves its GA successor.
const PREVIEW_API_VERSION: &str = "7.6-preview.2";
const REPLAY_API_VERSION: &str = "7.6";
/// Hosts the test-proxy wrote in place of the real vault's (README, sanitising table).
const SANITIZED_HOSTS: [&str; 2] = ["Sanitized.vault.azure.net", "keyvault_name.vault.azure.net"];
/// How far a time may lie outside the replay's own run and still be the emulator's clock.
const CLOCK_SLACK: i64 = 120;
/// Pages the harness follows past the recording's last one before it calls a listing endless.
const MAX_EXTRA_PAGES: usize = 100;

// --- the recordings -------------------------------------------------------------------

/// One request and its answer as the test-proxy stored them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    request_uri: String,
    request_method: String,
    #[serde(default)]
    request_headers: BTreeMap<String, Value>,
    #[serde(default)]
    request_body: Option<Value>,
    status_code: u16,
    #[serde(default)]
    response_headers: BTreeMap<String, Value>,
    #[serde(default)]
    response_body: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordingFile {
    entries: Vec<Entry>,
    #[serde(default)]
    variables: Map<String, Value>,
}

struct Recording {
    /// `js/can_restore_a_secret`: the file's path under `recordings/`, without `.json`.
    name: String,
    entries: Vec<Entry>,
    /// Every host the recorded vault appears under: the sanitised names and the real one.
    hosts: Vec<String>,
}

impl Recording {
    fn parse(name: &str, text: &str) -> Result<Self, String> {
        let file: RecordingFile =
            serde_json::from_str(text).map_err(|e| format!("not a test-proxy recording: {e}"))?;
        let mut hosts: Vec<String> = SANITIZED_HOSTS.iter().map(|h| h.to_string()).collect();
        for value in file.variables.values() {
            if let Some(parts) = value.as_str().and_then(split_url)
                && parts
                    .host
                    .to_ascii_lowercase()
                    .ends_with(".vault.azure.net")
            {
                hosts.push(parts.host.to_owned());
            }
        }
        Ok(Self {
            name: name.to_owned(),
            entries: file.entries,
            hosts,
        })
    }

    /// The secret names the recording's own requests use (lower case: names are
    /// case-insensitive). A listing in the recording may show other tests' secrets,
    /// which were in the real vault at the time; the replay starts from an empty vault.
    fn touched_names(&self) -> HashSet<String> {
        self.entries
            .iter()
            .filter_map(|e| match segments(e.path()).as_slice() {
                ["secrets", "restore"] => None,
                ["secrets" | "deletedsecrets", name, ..] => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }
}

/// Status, error code and inner error code: what decides whether two answers are the same
/// kind of answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    code: Option<String>,
    inner: Option<String>,
}

impl Answer {
    fn of(status: u16, body: Option<&Value>) -> Self {
        let error = body.and_then(|b| b.get("error"));
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        Self {
            status,
            code: text(error.and_then(|e| e.get("code"))),
            inner: text(error.and_then(|e| e.pointer("/innererror/code"))),
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(inner) = &self.inner {
            write!(f, "/{inner}")?;
        }
        Ok(())
    }
}

impl Entry {
    fn path(&self) -> &str {
        split_url(&self.request_uri).map_or("", |p| p.path)
    }

    fn query(&self) -> &str {
        split_url(&self.request_uri).map_or("", |p| p.query)
    }

    /// The recorded URI without its host, for reports.
    fn path_and_query(&self) -> &str {
        let rest = self
            .request_uri
            .strip_prefix("https://")
            .unwrap_or(&self.request_uri);
        rest.find('/').map_or(rest, |i| &rest[i..])
    }

    fn request_header(&self, name: &str) -> Option<&str> {
        header_in(&self.request_headers, name)
    }

    fn response_header(&self, name: &str) -> Option<&str> {
        header_in(&self.response_headers, name)
    }

    fn has_auth(&self) -> bool {
        self.request_header("authorization").is_some()
    }

    fn answer(&self) -> Answer {
        Answer::of(self.status_code, self.response_body.as_ref())
    }

    /// The same request again, as a client that polls or retries sends it.
    fn same_request(&self, other: &Entry) -> bool {
        self.request_method == other.request_method
            && self.request_uri == other.request_uri
            && self.request_body == other.request_body
            && self.has_auth() == other.has_auth()
    }

    fn is_continuation(&self) -> bool {
        query_param(self.query(), "$skiptoken").is_some()
    }

    /// A page of a listing: `{"value": [...], "nextLink": ...}`.
    fn is_page(&self) -> bool {
        self.request_method == "GET"
            && self.status_code == 200
            && self.response_body.as_ref().is_some_and(|b| {
                b.get("value").is_some_and(Value::is_array) && b.get("nextLink").is_some()
            })
    }

    fn is_backup(&self) -> bool {
        self.request_method == "POST"
            && matches!(segments(self.path()).as_slice(), ["secrets", _, "backup"])
    }

    fn is_restore(&self) -> bool {
        self.request_method == "POST"
            && matches!(segments(self.path()).as_slice(), ["secrets", "restore"])
    }

    /// A request whose answer carries a version id the vault has just created.
    fn creates_version(&self) -> bool {
        self.is_restore()
            || (self.request_method == "PUT"
                && matches!(segments(self.path()).as_slice(), ["secrets", _]))
    }
}

fn header_in<'a>(headers: &'a BTreeMap<String, Value>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

// --- URLs -------------------------------------------------------------------------------

struct UrlParts<'a> {
    authority: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: &'a str,
}

/// An `https://` URL split by hand: the recorded hosts (`keyvault_name...`) are not all
/// names a URL parser is obliged to accept, and the harness must not re-encode anything.
fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let rest = url.strip_prefix("https://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    Some(UrlParts {
        authority,
        host,
        port,
        path,
        query,
    })
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| v)
}

/// A recorded vault URL on the emulator: `https://<recorded host>[:443]/path?query` becomes
/// `<base>/path?query`. Any other URL is not the recorded vault's and gives `None`.
fn map_host(url: &str, hosts: &[String], base: &str) -> Option<String> {
    let parts = split_url(url)?;
    if parts.port.is_some_and(|p| p != "443")
        || !hosts.iter().any(|h| h.eq_ignore_ascii_case(parts.host))
    {
        return None;
    }
    let tail = &url["https://".len() + parts.authority.len()..];
    Some(format!("{}{tail}", base.trim_end_matches('/')))
}

/// A recorded vault URL (request URI, id, recoveryId, nextLink) on the emulator: host
/// mapped, version ids rewritten through `versions`, the preview api-version replaced.
fn map_url(
    recorded: &str,
    hosts: &[String],
    base: &str,
    versions: &HashMap<String, String>,
) -> Option<String> {
    let mapped = map_host(recorded, hosts, base)?;
    let (path, query) = mapped.split_once('?').unwrap_or((&mapped, ""));
    let path = path
        .split('/')
        .map(|s| versions.get(s).map_or(s, String::as_str))
        .collect::<Vec<_>>()
        .join("/");
    Some(if query.is_empty() {
        path
    } else {
        format!("{path}?{}", rewrite_api_version(query))
    })
}

fn rewrite_api_version(query: &str) -> String {
    let preview = format!("api-version={PREVIEW_API_VERSION}");
    let replay = format!("api-version={REPLAY_API_VERSION}");
    query
        .split('&')
        .map(|pair| {
            if pair == preview {
                replay.as_str()
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The secret name in a vault URL (`.../secrets/{name}[/...]`, `.../deletedsecrets/{name}`).
fn name_of(url: &str) -> Option<&str> {
    let parts = split_url(url)?;
    let segs = segments(parts.path);
    let at = segs
        .iter()
        .position(|s| *s == "secrets" || *s == "deletedsecrets")?;
    segs.get(at + 1).copied()
}

/// The version in a secret id `.../secrets/{name}/{version}`.
fn version_of(url: &str) -> Option<&str> {
    match segments(split_url(url)?.path).as_slice() {
        ["secrets", _, version] => Some(version),
        _ => None,
    }
}

fn is_version_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// --- version ids ------------------------------------------------------------------------

/// Recorded version ids and the emulator's, paired by order of creation: the first version
/// a PUT or restore returned in the recording is the emulator's first, and so on.
#[derive(Default)]
struct VersionMap {
    to_emulator: HashMap<String, String>,
    from_emulator: HashMap<String, String>,
}

impl VersionMap {
    /// Pairs a recorded version with the one the emulator returned for the same request.
    /// A version seen before (a restore gives the original id back) must pair the same way.
    fn learn(&mut self, recorded: &str, emulator: &str) -> Result<(), String> {
        match (
            self.to_emulator.get(recorded),
            self.from_emulator.get(emulator),
        ) {
            (Some(known), _) if known == emulator => Ok(()),
            (Some(known), _) => Err(format!(
                "the recording's version {recorded} is the emulator's {known}, here the emulator answered {emulator}"
            )),
            (None, Some(other)) => Err(format!(
                "the emulator answered {emulator} again, which already stands for the recording's {other}, not a new version as for the recording's {recorded}"
            )),
            (None, None) => {
                self.to_emulator
                    .insert(recorded.to_owned(), emulator.to_owned());
                self.from_emulator
                    .insert(emulator.to_owned(), recorded.to_owned());
                Ok(())
            }
        }
    }
}

// --- talking to a vault -----------------------------------------------------------------

#[derive(Debug, Clone)]
struct Outgoing {
    method: String,
    url: String,
    /// `Authorization: Bearer replay`, sent exactly when the recorded request had a token.
    bearer: bool,
    body: Option<String>,
    client_request_id: Option<String>,
    return_client_request_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Got {
    status: u16,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: String,
    /// The `x-ms-client-request-id` the harness sent, which the answer must echo.
    sent_client_request_id: Option<String>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    fn answer(&self) -> Answer {
        Answer::of(self.status, self.json().as_ref())
    }
}

/// Where requests go: the emulator over HTTPS, or a script in the unit tests.
trait Vault {
    async fn send(&mut self, request: &Outgoing) -> Result<Got, String>;
}

struct Http(reqwest::Client);

impl Vault for Http {
    async fn send(&mut self, r: &Outgoing) -> Result<Got, String> {
        let method = reqwest::Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.0.request(method, &r.url);
        if r.bearer {
            request = request.header("authorization", "Bearer replay");
        }
        if let Some(id) = &r.client_request_id {
            request = request.header("x-ms-client-request-id", id);
        }
        if let Some(value) = &r.return_client_request_id {
            request = request.header("x-ms-return-client-request-id", value);
        }
        if let Some(body) = &r.body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let response = request.send().await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.text().await.map_err(|e| format!("{e:?}"))?;
        Ok(Got {
            status,
            headers,
            body,
            sent_client_request_id: None,
        })
    }
}

// --- the outcome ------------------------------------------------------------------------

#[derive(Debug)]
struct Mismatch {
    recording: String,
    /// `None`: emptying the vault before the recording failed.
    entry: Option<usize>,
    method: String,
    path: String,
    detail: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(i) => write!(
                f,
                "{} #{i} {} {}: {}",
                self.recording, self.method, self.path, self.detail
            ),
            None => write!(
                f,
                "{} (emptying the vault): {}",
                self.recording, self.detail
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    entries: usize,
    /// Entries with at least one mismatch.
    bad: BTreeSet<usize>,
    /// Entries the emulator had no answer for of their own (transient answers it did not
    /// need, pages after its listing ended): matched only if what stood in for them did.
    unconfirmed: BTreeSet<usize>,
    /// Recorded transient answers the emulator did not need to give (it answered finally sooner).
    transient_skipped: usize,
    /// Transient answers the emulator gave beyond the recorded number.
    extra_polls: usize,
    /// Recorded `$skiptoken` pages not sent: the emulator's listing had already ended.
    pages_folded: usize,
    notes: Vec<String>,
    mismatches: Vec<Mismatch>,
}

impl Outcome {
    fn matched(&self) -> usize {
        self.entries - self.bad.union(&self.unconfirmed).count()
    }

    fn summary(&self) -> String {
        let matched = self.matched();
        let mut line = format!(
            "{:<90} {:>3} entries, {:>3} matched",
            self.name, self.entries, matched
        );
        if !self.bad.is_empty() {
            line += &format!(
                " ({} MISMATCHES on {} entries)",
                self.mismatches.len(),
                self.bad.len()
            );
        } else if !self.mismatches.is_empty() {
            line += &format!(" ({} MISMATCHES)", self.mismatches.len());
        }
        let mut extras = Vec::new();
        if self.transient_skipped > 0 {
            extras.push(format!(
                "{} transient answers not needed",
                self.transient_skipped
            ));
        }
        if self.extra_polls > 0 {
            extras.push(format!("{} extra polls", self.extra_polls));
        }
        if self.pages_folded > 0 {
            extras.push(format!("{} pages folded", self.pages_folded));
        }
        extras.extend(self.notes.iter().cloned());
        if !extras.is_empty() {
            line += &format!("; {}", extras.join("; "));
        }
        line
    }
}

// --- replaying one recording ------------------------------------------------------------

#[derive(Clone, Copy)]
struct Timing {
    /// Pause before polling again when the emulator gives more transient answers than
    /// the recording shows.
    poll_pause: Duration,
    max_extra_polls: usize,
}

const LIVE: Timing = Timing {
    poll_pause: Duration::from_millis(250),
    max_extra_polls: 40,
};

/// A listing in progress: the recorded pages so far and the emulator's.
#[derive(Default)]
struct Listing {
    /// The emulator path listed (`/secrets`, `/secrets/{name}/versions`).
    path: String,
    api_version: String,
    maxresults: Option<String>,
    /// The recording's items for the recording's own secrets, in recorded form.
    expected: Vec<Value>,
    /// Every recorded id, for the order the real service lists in.
    recorded_ids: Vec<String>,
    got: Vec<Value>,
    /// The emulator's latest `nextLink`; `None` once its listing has ended.
    next: Option<String>,
    /// Recorded pages not sent because the emulator's listing had already ended.
    folded: Vec<usize>,
}

struct Replay<'r> {
    rec: &'r Recording,
    base: String,
    timing: Timing,
    started: i64,
    names: HashSet<String>,
    versions: VersionMap,
    /// Recorded backup blob → the emulator's blob from the same backup call.
    backups: Vec<(String, String)>,
    listing: Option<Listing>,
    /// Emulator secret id (with version) → (created, updated) as first and last seen.
    seen: HashMap<String, (i64, i64)>,
    recoverable_days: Option<i64>,
    out: Outcome,
}

async fn replay<V: Vault>(rec: &Recording, vault: &mut V, base: &str, timing: Timing) -> Outcome {
    let replay = Replay {
        rec,
        base: base.trim_end_matches('/').to_owned(),
        timing,
        started: unix_now(),
        names: rec.touched_names(),
        versions: VersionMap::default(),
        backups: Vec::new(),
        listing: None,
        seen: HashMap::new(),
        recoverable_days: None,
        out: Outcome {
            name: rec.name.clone(),
            entries: rec.entries.len(),
            ..Outcome::default()
        },
    };
    replay.run(vault).await
}

/// Whether recorded entry `i` is a timing-dependent answer that the real service gave
/// before its final one, so that an emulator may give it fewer or more times.
///
/// Four kinds are recognised, each only where the recording shows it: the client sends
/// the very same request again next (method, URI, body, token), and the last *different*
/// request before the repeats is what causes the transient state:
/// - `GET /deletedsecrets/{n}` → 404 SecretNotFound, right after `DELETE /secrets/{n}`;
/// - `DELETE /deletedsecrets/{n}` → 409 with innererror ObjectIsBeingDeleted;
/// - `POST /secrets/restore` → 409 Conflict, right after a purge;
/// - `GET /secrets/{n}[/...]` → 404 SecretNotFound, right after a recover of `{n}`.
///
/// A 404 for a name that was never deleted (`GetDeletedSecretNonExisting`) is therefore
/// final, and so is any answer not followed by the same request.
fn is_transient(entries: &[Entry], i: usize) -> bool {
    let e = &entries[i];
    if !entries.get(i + 1).is_some_and(|next| next.same_request(e)) {
        return false;
    }
    let answer = e.answer();
    let code = |c: &str| answer.code.as_deref() == Some(c);
    let before = entries[..i].iter().rev().find(|p| !p.same_request(e));
    let before_is = |method: &str, status: u16, shape: &dyn Fn(&[&str]) -> bool| {
        before.is_some_and(|p| {
            p.request_method == method && p.status_code == status && shape(&segments(p.path()))
        })
    };
    match (e.request_method.as_str(), segments(e.path()).as_slice()) {
        ("GET", ["deletedsecrets", name]) => {
            answer.status == 404
                && code("SecretNotFound")
                && before_is(
                    "DELETE",
                    200,
                    &|s| matches!(s, ["secrets", n] if n.eq_ignore_ascii_case(name)),
                )
        }
        ("DELETE", ["deletedsecrets", _]) => {
            answer.status == 409 && answer.inner.as_deref() == Some("ObjectIsBeingDeleted")
        }
        ("POST", ["secrets", "restore"]) => {
            answer.status == 409
                && code("Conflict")
                && before_is("DELETE", 204, &|s| matches!(s, ["deletedsecrets", _]))
        }
        ("GET", ["secrets", name, ..]) => {
            answer.status == 404
                && code("SecretNotFound")
                && before_is(
                    "POST",
                    200,
                    &|s| matches!(s, ["deletedsecrets", n, "recover"] if n.eq_ignore_ascii_case(name)),
                )
        }
        _ => false,
    }
}

/// The entry with the final answer of the run of transient answers starting at `i`
/// (`i` itself when entry `i` is not transient).
fn transient_run_end(entries: &[Entry], i: usize) -> usize {
    let mut end = i;
    while is_transient(entries, end) {
        end += 1;
    }
    end
}

impl Replay<'_> {
    async fn run<V: Vault>(mut self, vault: &mut V) -> Outcome {
        let rec = self.rec;
        let mut i = 0;
        while i < rec.entries.len() {
            let last = transient_run_end(&rec.entries, i);
            if last > i {
                self.transient_run(vault, i, last).await;
                i = last + 1;
                continue;
            }
            if rec.entries[i].is_page() {
                self.page(vault, i).await;
            } else if let Some(got) = self.send(vault, i, None).await {
                self.check(i, &got);
            }
            i += 1;
        }
        if self.listing.is_some() {
            self.out
                .notes
                .push("the recording ends inside a listing".into());
        }
        self.out
    }

    /// Entries `first..last` are the recorded transient answers to one request and `last`
    /// its final answer. The harness sends the request and looks at the kind of answer
    /// (status, error code, inner code):
    /// - the transient kind: compared in full with the next recorded transient entry, and
    ///   the request is sent again. Beyond the recorded number of transients the harness
    ///   pauses between polls and gives up after `max_extra_polls` (the real service's
    ///   number depends on its timing, so the emulator's may be larger);
    /// - any other kind: it is the final answer and is compared in full with entry `last`;
    ///   recorded transients the emulator did not give are not needed (0..n transients).
    ///
    /// The run ends at `last`: a later entry with the same request (a second read after a
    /// recover) is replayed and compared on its own, not swallowed as a repeat.
    async fn transient_run<V: Vault>(&mut self, vault: &mut V, first: usize, last: usize) {
        let rec = self.rec;
        let transient = rec.entries[first].answer();
        let final_answer = rec.entries[last].answer();
        let recorded = last - first;
        let mut seen = 0;
        loop {
            let Some(got) = self.send(vault, (first + seen).min(last), None).await else {
                return;
            };
            if final_answer != transient && got.answer() == transient {
                self.check((first + seen).min(last - 1), &got);
                seen += 1;
                if seen > recorded {
                    self.out.extra_polls += 1;
                    if seen - recorded > self.timing.max_extra_polls {
                        self.differ(
                            last,
                            format!(
                                "status: expected {final_answer} after the transient {transient} answers, still {transient} after {seen} polls"
                            ),
                        );
                        return;
                    }
                    tokio::time::sleep(self.timing.poll_pause).await;
                }
                continue;
            }
            let skipped = first + seen..last;
            self.out.transient_skipped += skipped.len();
            self.check(last, &got);
            if self.out.bad.contains(&last) {
                self.out.unconfirmed.extend(skipped);
            }
            return;
        }
    }

    fn differ(&mut self, i: usize, detail: String) {
        let e = &self.rec.entries[i];
        self.out.bad.insert(i);
        self.out.mismatches.push(Mismatch {
            recording: self.rec.name.clone(),
            entry: Some(i),
            method: e.request_method.clone(),
            path: e.path_and_query().to_owned(),
            detail,
        });
    }

    /// A recorded vault URL (request URI, id, recoveryId, nextLink) as the emulator's:
    /// host mapped, known version ids rewritten, the preview api-version replaced.
    fn map_url(&self, recorded: &str) -> Option<String> {
        map_url(
            recorded,
            &self.rec.hosts,
            &self.base,
            &self.versions.to_emulator,
        )
    }

    fn request_body(&self, e: &Entry) -> Option<String> {
        let mut body = e.request_body.clone()?;
        // A restore sends the emulator's own blob from this recording's backup call; a
        // blob no backup call returned (the malformed-blob recordings) goes as recorded.
        if e.is_restore()
            && let Some(blob) = body.get("value").and_then(Value::as_str)
            && let Some((_, ours)) = self.backups.iter().find(|(recorded, _)| recorded == blob)
        {
            body["value"] = Value::String(ours.clone());
        }
        self.map_strings(&mut body);
        Some(body.to_string())
    }

    fn map_strings(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(mapped) = self.map_url(s) {
                    *s = mapped;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.map_strings(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.map_strings(v)),
            _ => {}
        }
    }

    /// Sends entry `i`'s request (to `url` instead of its own URI for `$skiptoken` pages).
    async fn send<V: Vault>(
        &mut self,
        vault: &mut V,
        i: usize,
        url: Option<String>,
    ) -> Option<Got> {
        let rec = self.rec;
        let e = &rec.entries[i];
        let Some(url) = url.or_else(|| self.map_url(&e.request_uri)) else {
            self.differ(
                i,
                format!("request: {} is not on the recorded vault", e.request_uri),
            );
            return None;
        };
        let request = Outgoing {
            method: e.request_method.clone(),
            url,
            bearer: e.has_auth(),
            body: self.request_body(e),
            client_request_id: e
                .request_header("x-ms-client-request-id")
                .map(|_| uuid::Uuid::new_v4().to_string()),
            return_client_request_id: e
                .request_header("x-ms-return-client-request-id")
                .map(str::to_owned),
        };
        match vault.send(&request).await {
            Ok(mut got) => {
                got.sent_client_request_id = request.client_request_id;
                Some(got)
            }
            Err(err) => {
                self.differ(i, format!("no answer from the vault: {err}"));
                None
            }
        }
    }

    fn check(&mut self, i: usize, got: &Got) {
        let rec = self.rec;
        let e = &rec.entries[i];
        let mut d = Vec::new();
        check_headers(e, got, self.started, &mut d);
        if got.status != e.status_code {
            d.push(format!(
                "status: expected {}, got {}{}",
                e.answer(),
                got.answer(),
                excerpt_suffix(&got.body)
            ));
        } else {
            match (&e.response_body, got.json()) {
                (None, _) if got.body.trim().is_empty() => {}
                (None, _) => d.push(format!("body: expected none, got {}", excerpt(&got.body))),
                (Some(_), None) => {
                    d.push(format!("body: expected JSON, got {}", excerpt(&got.body)))
                }
                (Some(expected), Some(actual)) => {
                    if expected.get("error").is_some() {
                        compare_error(expected, &actual, &mut d);
                    } else if e.is_backup() {
                        self.compare_backup(expected, &actual, &mut d);
                    } else {
                        if e.creates_version() {
                            self.learn_version(expected, &actual, &mut d);
                        }
                        self.compare_secret(expected, &actual, e.request_method == "GET", &mut d);
                    }
                }
            }
        }
        for detail in d {
            self.differ(i, detail);
        }
    }

    fn compare_backup(&mut self, expected: &Value, actual: &Value, d: &mut Vec<String>) {
        if let (Some(exp), Some(act)) = (expected.as_object(), actual.as_object()) {
            compare_keys("fields", exp, act, d);
        }
        let recorded = expected.get("value").and_then(Value::as_str);
        match actual.get("value").and_then(Value::as_str) {
            Some(blob)
                if !blob.is_empty()
                    && blob
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                if let Some(recorded) = recorded {
                    self.backups.push((recorded.to_owned(), blob.to_owned()));
                }
            }
            other => d.push(format!(
                "value: expected a backup blob (non-empty base64url), got {}",
                other.map_or("none".into(), excerpt)
            )),
        }
    }

    fn learn_version(&mut self, expected: &Value, actual: &Value, d: &mut Vec<String>) {
        let id = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_owned);
        let (Some(recorded), Some(ours)) = (id(expected), id(actual)) else {
            return;
        };
        let (Some(recorded), Some(ours)) = (version_of(&recorded), version_of(&ours)) else {
            return;
        };
        if !is_version_id(ours) {
            return; // compare_secret reports the malformed id
        }
        if let Err(problem) = self.versions.learn(recorded, ours) {
            d.push(format!("id: {problem}"));
        }
    }

    /// A secret bundle, deleted-secret bundle or list item, `expected` as recorded.
    fn compare_secret(
        &mut self,
        expected: &Value,
        actual: &Value,
        is_get: bool,
        d: &mut Vec<String>,
    ) {
        let (Some(exp), Some(act)) = (expected.as_object(), actual.as_object()) else {
            d.push(format!(
                "body: expected an object, got {}",
                excerpt(&actual.to_string())
            ));
            return;
        };
        compare_keys("fields", exp, act, d);
        for field in ["id", "recoveryId"] {
            if let (Some(want), Some(got)) =
                (exp.get(field).and_then(Value::as_str), act.get(field))
            {
                let want = self.map_url(want).unwrap_or_else(|| want.to_owned());
                if got.as_str() != Some(want.as_str()) {
                    d.push(format!("{field}: expected {want}, got {got}"));
                }
            }
        }
        if let Some(version) = act.get("id").and_then(Value::as_str).and_then(version_of)
            && !is_version_id(version)
        {
            d.push(format!(
                "id: version {version:?} is not 32 lower-case hex characters"
            ));
        }
        for field in ["value", "contentType", "tags", "managed", "kid"] {
            compare_present(field, exp.get(field), act.get(field), d);
        }
        let empty = Map::new();
        let ea = exp
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let aa = act
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        compare_keys("attributes", ea, aa, d);
        for field in ["enabled", "nbf", "exp"] {
            compare_present(
                &format!("attributes.{field}"),
                ea.get(field),
                aa.get(field),
                d,
            );
        }
        self.compare_retention(ea, aa, d);
        self.compare_times(act, aa, is_get, d);
    }

    /// `recoverableDays` is the vault's retention setting, not behaviour: the recorded
    /// vaults kept deleted secrets 7 days (JS, Rust) or 90 days (.NET), and one replay vault
    /// cannot have both. The emulator's must be a valid retention (7..=90), the same on every
    /// answer of the vault, and `recoveryLevel` must be exactly what the real service reports
    /// for it: the recorded level where the retention is the recorded one, otherwise the
    /// same level with `Customized` exactly when the retention is under 90 days.
    fn compare_retention(
        &mut self,
        ea: &Map<String, Value>,
        aa: &Map<String, Value>,
        d: &mut Vec<String>,
    ) {
        let recorded_days = ea.get("recoverableDays").and_then(Value::as_i64);
        let days = aa.get("recoverableDays").and_then(Value::as_i64);
        if aa.contains_key("recoverableDays") {
            match days {
                Some(days) if (7..=90).contains(&days) => {}
                _ => d.push(format!(
                    "attributes.recoverableDays: expected 7..=90, got {}",
                    aa["recoverableDays"]
                )),
            }
        }
        if let Some(days) = days {
            match self.recoverable_days {
                None => self.recoverable_days = Some(days),
                Some(before) if before != days => d.push(format!(
                    "attributes.recoverableDays: {days}, but {before} earlier from the same vault"
                )),
                Some(_) => {}
            }
            if let Some(recorded) = recorded_days.filter(|r| *r != days) {
                let note = format!("vault retention {days} days, the recording's {recorded}");
                if !self.out.notes.contains(&note) {
                    self.out.notes.push(note);
                }
            }
        }
        if let (Some(level), Some(got)) = (
            ea.get("recoveryLevel").and_then(Value::as_str),
            aa.get("recoveryLevel"),
        ) {
            let want = expected_recovery_level(level, recorded_days, days);
            if got.as_str() != Some(want.as_str()) {
                d.push(format!(
                    "attributes.recoveryLevel: expected {want:?}, got {got}"
                ));
            }
        }
    }

    /// Times are the emulator's own: plausible for this run and consistent, never equal to
    /// the recording's.
    fn compare_times(
        &mut self,
        act: &Map<String, Value>,
        aa: &Map<String, Value>,
        is_get: bool,
        d: &mut Vec<String>,
    ) {
        let now = unix_now();
        let started = self.started;
        let mut time = |label: &str, value: Option<&Value>, plausible: bool| -> Option<i64> {
            let value = value?;
            match value.as_i64() {
                Some(t)
                    if !plausible || (started - CLOCK_SLACK..=now + CLOCK_SLACK).contains(&t) =>
                {
                    Some(t)
                }
                Some(_) => {
                    d.push(format!(
                        "{label}: {value} is not a plausible time for a replay running since {started}"
                    ));
                    None
                }
                None => {
                    d.push(format!("{label}: expected Unix seconds, got {value}"));
                    None
                }
            }
        };
        let created = time("attributes.created", aa.get("created"), true);
        let updated = time("attributes.updated", aa.get("updated"), true);
        let deleted = time("deletedDate", act.get("deletedDate"), true);
        let purge = time("scheduledPurgeDate", act.get("scheduledPurgeDate"), false);
        if let (Some(c), Some(u)) = (created, updated)
            && c > u
        {
            d.push(format!("attributes: created {c} is after updated {u}"));
        }
        if let (Some(deleted), Some(purge), Some(days)) = (deleted, purge, self.recoverable_days)
            && purge - deleted != days * 86_400
        {
            d.push(format!(
                "scheduledPurgeDate: {purge} - deletedDate {deleted} = {}, expected recoverableDays {days} × 86400",
                purge - deleted
            ));
        }
        let Some(id) = act
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| version_of(id).is_some())
        else {
            return;
        };
        let (Some(created), Some(updated)) = (created, updated) else {
            return;
        };
        match self.seen.get_mut(id) {
            None => {
                self.seen.insert(id.to_owned(), (created, updated));
            }
            Some((first_created, last_updated)) => {
                if created != *first_created {
                    d.push(format!(
                        "attributes.created: {created}, but {first_created} when the version was first seen"
                    ));
                }
                if is_get && updated != *last_updated {
                    d.push(format!(
                        "attributes.updated: a GET moved it from {last_updated} to {updated}"
                    ));
                } else if updated < *last_updated {
                    d.push(format!(
                        "attributes.updated: went back from {last_updated} to {updated}"
                    ));
                }
                *last_updated = updated;
            }
        }
    }

    /// A page of a listing. Pages are compared by what holds whatever the page boundaries
    /// are: every page's shape, and at the recorded last page (`nextLink: null`) the
    /// concatenated items. A recorded `$skiptoken` request sends the emulator's own
    /// previous `nextLink`; once the emulator's listing has ended, further recorded pages
    /// are folded (the real service may send empty pages before `null`), and at the
    /// recorded end the harness follows the emulator's remaining `nextLink`s.
    async fn page<V: Vault>(&mut self, vault: &mut V, i: usize) {
        let rec = self.rec;
        let e = &rec.entries[i];
        let body = e.response_body.as_ref().expect("is_page checked the body");
        let url = if e.is_continuation() {
            match &self.listing {
                None => {
                    self.differ(
                        i,
                        "request: a $skiptoken page with no listing before it".into(),
                    );
                    return;
                }
                Some(listing) => listing.next.clone(),
            }
        } else {
            let Some(url) = self.map_url(&e.request_uri) else {
                self.differ(
                    i,
                    format!("request: {} is not on the recorded vault", e.request_uri),
                );
                return;
            };
            if self.listing.is_some() {
                self.out
                    .notes
                    .push("a recorded listing stopped before nextLink null".into());
            }
            let parts = split_url(&url).expect("map_url gives an https URL");
            self.listing = Some(Listing {
                path: parts.path.to_owned(),
                api_version: query_param(parts.query, "api-version")
                    .unwrap_or("")
                    .to_owned(),
                maxresults: query_param(parts.query, "maxresults").map(str::to_owned),
                ..Listing::default()
            });
            Some(url)
        };
        let items = body["value"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ours: Vec<Value> = items
            .iter()
            .filter(|item| {
                item.get("id")
                    .and_then(Value::as_str)
                    .and_then(name_of)
                    .is_some_and(|n| self.names.contains(&n.to_ascii_lowercase()))
            })
            .cloned()
            .collect();
        let listing = self.listing.as_mut().expect("a listing is in progress");
        listing.expected.extend(ours);
        listing.recorded_ids.extend(items.iter().map(|item| {
            item.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        }));
        match url {
            Some(url) => {
                if let Some(got) = self.send(vault, i, Some(url)).await {
                    self.check_page(i, &got);
                } else if let Some(listing) = self.listing.as_mut() {
                    listing.next = None;
                }
            }
            None => {
                self.out.pages_folded += 1;
                if let Some(listing) = self.listing.as_mut() {
                    listing.folded.push(i);
                }
            }
        }
        if body["nextLink"].is_null() {
            self.finish_listing(vault, i).await;
        }
    }

    fn check_page(&mut self, i: usize, got: &Got) {
        let rec = self.rec;
        let e = &rec.entries[i];
        let d = match self.listing.as_mut() {
            Some(listing) => page_differences(e, got, listing, &self.base, self.started),
            None => Vec::new(),
        };
        for detail in d {
            self.differ(i, detail);
        }
    }

    async fn finish_listing<V: Vault>(&mut self, vault: &mut V, i: usize) {
        let mut extra = 0;
        while let Some(link) = self.listing.as_ref().and_then(|l| l.next.clone()) {
            extra += 1;
            if extra > MAX_EXTRA_PAGES {
                self.differ(
                    i,
                    format!("nextLink: still not null {MAX_EXTRA_PAGES} pages after the recording's last page"),
                );
                break;
            }
            let Some(got) = self.send(vault, i, Some(link)).await else {
                break;
            };
            self.check_page(i, &got);
        }
        let Some(listing) = self.listing.take() else {
            return;
        };
        for detail in self.item_differences(&listing) {
            self.differ(i, detail);
        }
        if self.out.bad.contains(&i) {
            self.out.unconfirmed.extend(listing.folded);
        }
    }

    /// The concatenated items of a listing, as sets of ids with the same fields.
    fn item_differences(&mut self, listing: &Listing) -> Vec<String> {
        let mut d = Vec::new();
        let id_of = |item: &Value| {
            item.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let want: BTreeMap<String, &Value> = listing
            .expected
            .iter()
            .map(|item| {
                let id = id_of(item);
                (self.map_url(&id).unwrap_or(id), item)
            })
            .collect();
        let mut got: BTreeMap<String, &Value> = BTreeMap::new();
        let mut got_ids = Vec::new();
        for item in &listing.got {
            let id = id_of(item);
            if got.insert(id.clone(), item).is_some() {
                d.push(format!("items: {id} listed twice"));
            }
            got_ids.push(id);
        }
        for (id, expected) in &want {
            match got.get(id) {
                None => d.push(format!("items: expected {id}, missing")),
                Some(actual) => {
                    let mut item = Vec::new();
                    self.compare_secret(expected, actual, true, &mut item);
                    d.extend(item.into_iter().map(|x| format!("item {id}: {x}")));
                }
            }
        }
        for id in got.keys().filter(|id| !want.contains_key(*id)) {
            d.push(format!(
                "items: got {id}, which the recorded listing does not have"
            ));
        }
        if is_sorted_by_id(&listing.recorded_ids) && !is_sorted_by_id(&got_ids) {
            d.push(format!(
                "items: the real service lists by id, the emulator in this order: {got_ids:?}"
            ));
        }
        d
    }
}

fn is_sorted_by_id(ids: &[String]) -> bool {
    ids.windows(2)
        .all(|w| w[0].to_ascii_lowercase() <= w[1].to_ascii_lowercase())
}

fn page_differences(
    e: &Entry,
    got: &Got,
    listing: &mut Listing,
    base: &str,
    started: i64,
) -> Vec<String> {
    let mut d = Vec::new();
    check_headers(e, got, started, &mut d);
    listing.next = None;
    if got.status != 200 {
        d.push(format!(
            "status: expected 200, got {}{}",
            got.answer(),
            excerpt_suffix(&got.body)
        ));
        return d;
    }
    let Some(Value::Object(body)) = got.json() else {
        d.push(format!(
            "body: expected a JSON object, got {}",
            excerpt(&got.body)
        ));
        return d;
    };
    if let Some(Value::Object(expected)) = &e.response_body {
        compare_keys("fields", expected, &body, &mut d);
    }
    match body.get("value").and_then(Value::as_array) {
        None => d.push("value: expected an array".into()),
        Some(items) => {
            if let Some(max) = listing
                .maxresults
                .as_deref()
                .and_then(|m| m.parse::<usize>().ok())
                && items.len() > max
            {
                d.push(format!(
                    "value: {} items on a page of maxresults={max}",
                    items.len()
                ));
            }
            listing.got.extend(items.iter().cloned());
        }
    }
    match body.get("nextLink") {
        None | Some(Value::Null) => {}
        Some(Value::String(link)) => {
            d.extend(next_link_problems(link, base, listing));
            // Followed only on the emulator: the harness sends a token with it.
            listing.next = link.starts_with(&format!("{base}/")).then(|| link.clone());
        }
        Some(other) => d.push(format!("nextLink: expected a URL or null, got {other}")),
    }
    d
}

/// A `nextLink` must be an absolute URL on the emulator's base with the listed path, the
/// request's api-version, a skiptoken, and `maxresults` exactly when the request had it.
fn next_link_problems(link: &str, base: &str, listing: &Listing) -> Vec<String> {
    let prefix = format!("{base}{}?", listing.path);
    let Some(query) = link.strip_prefix(&prefix) else {
        return vec![format!("nextLink: expected {prefix}…, got {link}")];
    };
    let mut d = Vec::new();
    if query_param(query, "api-version") != Some(listing.api_version.as_str()) {
        d.push(format!(
            "nextLink: expected api-version={}, got {link}",
            listing.api_version
        ));
    }
    if query_param(query, "$skiptoken").is_none_or(str::is_empty) {
        d.push(format!("nextLink: expected a $skiptoken, got {link}"));
    }
    if query_param(query, "maxresults") != listing.maxresults.as_deref() {
        d.push(format!(
            "nextLink: expected maxresults {:?} as in the request, got {link}",
            listing.maxresults
        ));
    }
    d
}

/// What the real service reports as `recoveryLevel` for `days` of retention, given what it
/// reported for `recorded_days`.
fn expected_recovery_level(
    recorded: &str,
    recorded_days: Option<i64>,
    days: Option<i64>,
) -> String {
    match (recorded_days, days) {
        (Some(r), Some(d)) if r != d => {
            let level = recorded.trim_start_matches("Customized");
            if d < 90 {
                format!("Customized{level}")
            } else {
                level.to_owned()
            }
        }
        _ => recorded.to_owned(),
    }
}

/// Error messages compared word for word: the ones the README documents as distinguishing
/// behaviour. Others (the 401's changed between 2025 and 2026, the malformed-blob text
/// depends on the blob) are not compared.
fn message_is_documented(message: &str) -> bool {
    message.starts_with("Deleted Secret not found: ")
        || message.starts_with("A secret with (name/id) ")
        || matches!(
            message,
            "Operation get is not allowed on a disabled secret."
                | "Secret is currently being deleted."
                | "HTTP PUT not allowed"
        )
}

fn compare_error(expected: &Value, actual: &Value, d: &mut Vec<String>) {
    let (Some(exp), Some(act)) = (expected.as_object(), actual.as_object()) else {
        d.push(format!(
            "body: expected an error object, got {}",
            excerpt(&actual.to_string())
        ));
        return;
    };
    compare_keys("fields", exp, act, d);
    let (Some(ee), Some(ae)) = (
        exp.get("error").and_then(Value::as_object),
        act.get("error").and_then(Value::as_object),
    ) else {
        return;
    };
    compare_keys("error fields", ee, ae, d);
    let expected = Answer::of(0, Some(expected));
    let actual = Answer::of(0, Some(actual));
    if expected.code != actual.code {
        d.push(format!(
            "error.code: expected {:?}, got {:?}",
            expected.code, actual.code
        ));
    }
    if expected.inner != actual.inner {
        d.push(format!(
            "error.innererror.code: expected {:?}, got {:?}",
            expected.inner, actual.inner
        ));
    }
    if let Some(message) = ee.get("message").and_then(Value::as_str)
        && message_is_documented(message)
        && ae.get("message").and_then(Value::as_str) != Some(message)
    {
        d.push(format!(
            "error.message: expected {message:?}, got {}",
            ae.get("message").unwrap_or(&Value::Null)
        ));
    }
}

fn compare_keys(
    label: &str,
    exp: &Map<String, Value>,
    act: &Map<String, Value>,
    d: &mut Vec<String>,
) {
    let want: BTreeSet<&str> = exp.keys().map(String::as_str).collect();
    let got: BTreeSet<&str> = act.keys().map(String::as_str).collect();
    if want != got {
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        d.push(format!(
            "{label}: expected {want:?}, got {got:?} (missing {missing:?}, unexpected {extra:?})"
        ));
    }
}

/// Compares a value both sides have; a value only one side has is a field-set difference.
fn compare_present(label: &str, exp: Option<&Value>, act: Option<&Value>, d: &mut Vec<String>) {
    if let (Some(exp), Some(act)) = (exp, act)
        && exp != act
    {
        d.push(format!("{label}: expected {exp}, got {act}"));
    }
}

fn check_headers(e: &Entry, got: &Got, started: i64, d: &mut Vec<String>) {
    if got
        .header("x-ms-request-id")
        .is_none_or(|v| v.trim().is_empty())
    {
        d.push("header x-ms-request-id: missing".into());
    }
    let now = unix_now();
    match got.header("date") {
        None => d.push("header Date: missing".into()),
        Some(date) => match parse_http_date(date) {
            Some(t) if (started - CLOCK_SLACK..=now + CLOCK_SLACK).contains(&t) => {}
            Some(_) => d.push(format!(
                "header Date: {date:?} is not the time of this replay"
            )),
            None => d.push(format!("header Date: {date:?} is not an HTTP date")),
        },
    }
    if e.response_header("x-ms-client-request-id").is_some()
        && let Some(sent) = &got.sent_client_request_id
        && got.header("x-ms-client-request-id") != Some(sent.as_str())
    {
        d.push(format!(
            "header x-ms-client-request-id: expected the request's {sent}, got {:?}",
            got.header("x-ms-client-request-id")
        ));
    }
    if e.status_code == 401 {
        match got.header("www-authenticate") {
            Some(challenge) if challenge_is_key_vaults(challenge) => {}
            other => d.push(format!(
                "header WWW-Authenticate: expected Bearer authorization=\"<authority>\", resource=\"https://vault.azure.net\", got {other:?}"
            )),
        }
    }
    if e.response_body.is_some()
        && got.status == e.status_code
        && !got
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"))
    {
        d.push(format!(
            "header Content-Type: expected application/json, got {:?}",
            got.header("content-type")
        ));
    }
}

fn challenge_is_key_vaults(challenge: &str) -> bool {
    challenge
        .strip_prefix("Bearer authorization=\"")
        .and_then(|rest| rest.split_once('"'))
        .is_some_and(|(authority, rest)| {
            !authority.is_empty() && rest == ", resource=\"https://vault.azure.net\""
        })
}

fn excerpt(text: &str) -> String {
    let flat: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        format!("{flat}…")
    } else {
        flat
    }
}

fn excerpt_suffix(body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", excerpt(body))
    }
}

// --- times ------------------------------------------------------------------------------

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Day 0 of the Unix epoch was a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An IMF-fixdate (`Thu, 13 Feb 2025 16:18:25 GMT`), the only form Key Vault sends.
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [weekday, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if weekday.strip_suffix(',')? != WEEKDAYS[days.rem_euclid(7) as usize] {
        return None;
    }
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

fn http_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// --- emptying the vault -----------------------------------------------------------------

async fn call<V: Vault>(vault: &mut V, method: &str, url: String) -> Result<Got, String> {
    let request = Outgoing {
        method: method.into(),
        url,
        bearer: true,
        body: None,
        client_request_id: None,
        return_client_request_id: None,
    };
    vault
        .send(&request)
        .await
        .map_err(|e| format!("{method} {}: {e}", request.url))
}

/// The names in a listing (`secrets` or `deletedsecrets`), following every `nextLink`.
async fn list_names<V: Vault>(
    vault: &mut V,
    base: &str,
    collection: &str,
) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut url = Some(format!(
        "{base}/{collection}?api-version={REPLAY_API_VERSION}"
    ));
    let mut pages = 0;
    while let Some(next) = url {
        pages += 1;
        if pages > 1000 {
            return Err(format!(
                "GET /{collection}: nextLink not null after 1000 pages"
            ));
        }
        let got = call(vault, "GET", next).await?;
        let body = got.json().filter(|_| got.status == 200).ok_or_else(|| {
            format!(
                "GET /{collection}: {}{}",
                got.status,
                excerpt_suffix(&got.body)
            )
        })?;
        for item in body["value"].as_array().into_iter().flatten() {
            if let Some(name) = item.get("id").and_then(Value::as_str).and_then(name_of) {
                names.push(name.to_owned());
            }
        }
        url = match body["nextLink"].as_str() {
            None => None,
            Some(link) if link.starts_with(&format!("{base}/")) => Some(link.to_owned()),
            Some(link) => {
                return Err(format!(
                    "GET /{collection}: nextLink {link} is not on {base}"
                ));
            }
        };
    }
    Ok(names)
}

/// Purges a deleted secret, waiting while the vault still finishes the deletion.
async fn purge<V: Vault>(vault: &mut V, base: &str, name: &str) -> Result<(), String> {
    let url = format!("{base}/deletedsecrets/{name}?api-version={REPLAY_API_VERSION}");
    let mut last = String::new();
    for _ in 0..40 {
        let got = call(vault, "DELETE", url.clone()).await?;
        match got.status {
            204 => return Ok(()),
            404 | 409 => last = format!("{}{}", got.status, excerpt_suffix(&got.body)),
            _ => {
                return Err(format!(
                    "DELETE /deletedsecrets/{name}: {}{}",
                    got.status,
                    excerpt_suffix(&got.body)
                ));
            }
        }
        tokio::time::sleep(LIVE.poll_pause).await;
    }
    // A name that stays 404 was never deleted-and-kept; the final listings tell.
    if last.starts_with("404") {
        Ok(())
    } else {
        Err(format!("DELETE /deletedsecrets/{name}: still {last}"))
    }
}

/// Empties a vault through the REST API alone: delete and purge every secret, then purge
/// every deleted secret, then check both listings are empty.
async fn empty_vault<V: Vault>(vault: &mut V, base: &str) -> Result<(), String> {
    for name in list_names(vault, base, "secrets").await? {
        let url = format!("{base}/secrets/{name}?api-version={REPLAY_API_VERSION}");
        let got = call(vault, "DELETE", url).await?;
        if got.status != 200 && got.status != 404 {
            return Err(format!(
                "DELETE /secrets/{name}: {}{}",
                got.status,
                excerpt_suffix(&got.body)
            ));
        }
        purge(vault, base, &name).await?;
    }
    for name in list_names(vault, base, "deletedsecrets").await? {
        purge(vault, base, &name).await?;
    }
    let left: Vec<String> = list_names(vault, base, "secrets")
        .await?
        .into_iter()
        .chain(list_names(vault, base, "deletedsecrets").await?)
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("still listed after deleting and purging: {left:?}"))
    }
}

// --- the test -----------------------------------------------------------------------------

/// `VAULTSYNC_KEYVAULT_CONFORMANCE_DIR`/recordings, else the conformance folder that every
/// engineer and CI have next to the repository (`../shared/keyvault-conformance`).
fn recordings_dir() -> PathBuf {
    let dir = std::env::var_os("VAULTSYNC_KEYVAULT_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/keyvault-conformance")
        })
        .join("recordings");
    assert!(
        dir.is_dir(),
        "the Key Vault recordings are not at {}: the replay needs ../shared/keyvault-conformance next to the repository, or VAULTSYNC_KEYVAULT_CONFORMANCE_DIR set to that folder",
        dir.display()
    );
    dir
}

/// Every `*.json` under the recordings directory (one level of language folders), sorted.
fn recording_files() -> Vec<(String, PathBuf)> {
    let root = recordings_dir();
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let listing = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("list the recordings in {}: {e}", dir.display()));
        for entry in listing {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "json") {
                let name = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .with_extension("")
                    .to_string_lossy()
                    .into_owned();
                files.push((name, path));
            }
        }
    }
    files.sort();
    files
}

fn load(name: &str, path: &Path) -> Result<Recording, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Recording::parse(name, &text)
}

#[tokio::test]
async fn replays_every_recording() {
    let base = common::env("VAULTSYNC_TEST_REPLAY_VAULT_URL")
        .trim_end_matches('/')
        .to_owned();
    let backend = std::env::var("VAULTSYNC_TEST_KEYVAULT").unwrap_or_else(|_| "unknown".into());
    let files = recording_files();
    assert!(
        !files.is_empty(),
        "found no recordings under {}",
        recordings_dir().display()
    );
    println!(
        "replaying {} recordings against {base} (Key Vault backend: {backend})",
        files.len()
    );
    let mut vault = Http(common::http_client());
    let mut mismatches = Vec::new();
    let mut failed = 0;
    for (name, path) in &files {
        let mut outcome = match load(name, path) {
            Ok(recording) => {
                let reset = empty_vault(&mut vault, &base).await;
                let mut outcome = replay(&recording, &mut vault, &base, LIVE).await;
                if let Err(problem) = reset {
                    outcome.mismatches.insert(
                        0,
                        Mismatch {
                            recording: name.clone(),
                            entry: None,
                            method: String::new(),
                            path: String::new(),
                            detail: problem,
                        },
                    );
                }
                outcome
            }
            Err(problem) => Outcome {
                name: name.clone(),
                notes: vec!["unreadable".into()],
                mismatches: vec![Mismatch {
                    recording: name.clone(),
                    entry: None,
                    method: String::new(),
                    path: String::new(),
                    detail: problem,
                }],
                ..Outcome::default()
            },
        };
        println!("{}", outcome.summary());
        if !outcome.mismatches.is_empty() {
            failed += 1;
        }
        mismatches.append(&mut outcome.mismatches);
    }
    let report: Vec<String> = mismatches.iter().map(|m| format!("  {m}")).collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches in {failed} of {} recordings (the recordings are the reference):\n{}",
        mismatches.len(),
        files.len(),
        report.join("\n")
    );
}

// --- unit tests of the harness itself -------------------------------------------------------

mod harness {
    use super::*;
    use std::collections::VecDeque;

    const BASE: &str = "https://127.0.0.1:8443";
    const QUICK: Timing = Timing {
        poll_pause: Duration::ZERO,
        max_extra_polls: 3,
    };

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    fn recording(name: &str) -> Recording {
        let path = recordings_dir().join(format!("{name}.json"));
        load(name, &path).expect("a recording")
    }

    /// A vault that gives scripted answers in order and keeps what it was sent. Like a
    /// real vault it echoes the client request id and dates its answers now.
    struct Scripted {
        answers: VecDeque<Got>,
        sent: Vec<Outgoing>,
    }

    impl Vault for Scripted {
        async fn send(&mut self, request: &Outgoing) -> Result<Got, String> {
            self.sent.push(request.clone());
            let mut got = self.answers.pop_front().ok_or_else(|| {
                format!(
                    "the script has no answer for {} {}",
                    request.method, request.url
                )
            })?;
            if let Some(id) = &request.client_request_id
                && got.header("x-ms-client-request-id") == Some("Sanitized")
            {
                got.headers
                    .insert("x-ms-client-request-id".into(), id.clone());
            }
            got.headers.insert("date".into(), http_date(unix_now()));
            Ok(got)
        }
    }

    /// The emulator a perfect copy of the real service would be: the recorded answers with
    /// the vault's host replaced by `BASE` (and the preview api-version by the one sent),
    /// the recording's times moved to now, version ids renumbered in the same order (so
    /// the mapping is exercised and sorted lists stay sorted), backup blobs of its own, and
    /// listings without the other tests' secrets (the replay vault starts empty).
    struct Mirror {
        versions: HashMap<String, String>,
        shift: i64,
    }

    impl Mirror {
        fn of(rec: &Recording) -> Self {
            let mut recorded: Vec<String> = Vec::new();
            let mut collect = |s: &str| {
                if let Some(parts) = split_url(s) {
                    recorded.extend(
                        segments(parts.path)
                            .into_iter()
                            .filter(|seg| is_version_id(seg))
                            .map(str::to_owned),
                    );
                }
            };
            for e in &rec.entries {
                collect(&e.request_uri);
                if let Some(body) = &e.response_body {
                    visit_strings(body, &mut collect);
                }
            }
            recorded.sort();
            recorded.dedup();
            let versions = recorded
                .into_iter()
                .enumerate()
                .map(|(k, v)| {
                    (
                        v,
                        format!("{:032x}", (k as u128 + 1) * 0x1111_1111_1111_1111),
                    )
                })
                .collect();
            let first_date = rec.entries[0]
                .response_header("date")
                .and_then(parse_http_date)
                .expect("a recorded Date");
            Self {
                versions,
                shift: unix_now() - first_date,
            }
        }

        fn url(&self, rec: &Recording, recorded: &str) -> Option<String> {
            map_url(recorded, &rec.hosts, BASE, &self.versions)
        }

        fn value(&self, rec: &Recording, key: Option<&str>, value: &mut Value) {
            match value {
                Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        self.value(rec, Some(k), v);
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(|v| self.value(rec, None, v)),
                Value::Number(n)
                    if matches!(
                        key,
                        Some("created" | "updated" | "deletedDate" | "scheduledPurgeDate")
                    ) =>
                {
                    *value = (n.as_i64().expect("Unix seconds") + self.shift).into();
                }
                Value::String(s) => {
                    if let Some(mapped) = self.url(rec, s) {
                        *s = mapped;
                    }
                }
                _ => {}
            }
        }

        fn answer(&self, rec: &Recording, e: &Entry) -> Got {
            let names = rec.touched_names();
            let body = e.response_body.clone().map(|mut body| {
                self.value(rec, None, &mut body);
                if e.is_page()
                    && let Some(items) = body["value"].as_array_mut()
                {
                    items.retain(|item| {
                        item["id"]
                            .as_str()
                            .and_then(name_of)
                            .is_some_and(|n| names.contains(&n.to_ascii_lowercase()))
                    });
                }
                if e.is_backup() && e.status_code == 200 {
                    let blob = body["value"].as_str().expect("a blob").to_owned();
                    body["value"] = Value::String(format!("EMU{blob}"));
                }
                body
            });
            Got {
                status: e.status_code,
                headers: e
                    .response_headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_owned()))
                    .collect(),
                body: body.map(|b| b.to_string()).unwrap_or_default(),
                sent_client_request_id: None,
            }
        }

        fn answers(rec: &Recording) -> Vec<Got> {
            let mirror = Self::of(rec);
            rec.entries.iter().map(|e| mirror.answer(rec, e)).collect()
        }
    }

    fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
        match value {
            Value::String(s) => f(s),
            Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
            Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
            _ => {}
        }
    }

    fn run(rec: &Recording, answers: Vec<Got>) -> (Outcome, Vec<Outgoing>) {
        let mut vault = Scripted {
            answers: answers.into(),
            sent: Vec::new(),
        };
        let outcome = block_on(replay(rec, &mut vault, BASE, QUICK));
        (outcome, vault.sent)
    }

    fn details(outcome: &Outcome) -> String {
        outcome
            .mismatches
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn host_mapping_covers_every_recorded_host_and_nothing_else() {
        let rec = recording("rust/list_secrets");
        let map = |url: &str| map_host(url, &rec.hosts, BASE);
        assert_eq!(
            map("https://Sanitized.vault.azure.net/secrets/a?api-version=7.6-preview.2").as_deref(),
            Some("https://127.0.0.1:8443/secrets/a?api-version=7.6-preview.2")
        );
        assert_eq!(
            map("https://keyvault_name.vault.azure.net:443/secrets?$skiptoken=x").as_deref(),
            Some("https://127.0.0.1:8443/secrets?$skiptoken=x")
        );
        // The real vault of the recording, from Variables, in any letter case.
        assert_eq!(
            map("https://TCAC7E9C41EF52CEC.vault.azure.net/secrets/a/b").as_deref(),
            Some("https://127.0.0.1:8443/secrets/a/b")
        );
        assert_eq!(map("https://other.vault.azure.net/secrets/a"), None);
        assert_eq!(
            map("https://Sanitized.vault.azure.net:8443/secrets/a"),
            None
        );
        assert_eq!(map("http://Sanitized.vault.azure.net/secrets/a"), None);
        assert_eq!(map("Secret is currently being deleted."), None);
        // .NET: the real host is in the request URIs too.
        let net = recording("net/Recover_Returns_Secret_Back_To_Active");
        assert!(
            net.hosts
                .iter()
                .any(|h| h == "kv-agt-260615134651.vault.azure.net")
        );
    }

    #[test]
    fn version_ids_map_by_order_of_creation() {
        let mut map = VersionMap::default();
        let (r1, r2) = (
            "a0cd49f3b4354c96a63ab490132baf1f",
            "877888a8c8b44c78ae75e12aaf1839a8",
        );
        let (e1, e2) = (
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
        );
        map.learn(r1, e1).unwrap();
        map.learn(r2, e2).unwrap();
        // Later request URIs and expected ids (any recorded host) use the emulator's.
        let hosts = vec!["Sanitized.vault.azure.net".to_owned()];
        let on_emulator = |url: &str| map_url(url, &hosts, BASE, &map.to_emulator);
        assert_eq!(
            on_emulator(&format!(
                "https://Sanitized.vault.azure.net/secrets/x/{r2}?api-version=7.6-preview.2"
            )),
            Some(format!("{BASE}/secrets/x/{e2}?api-version=7.6"))
        );
        assert_eq!(
            on_emulator("https://Sanitized.vault.azure.net/secrets/x/?api-version=2025-07-01"),
            Some(format!("{BASE}/secrets/x/?api-version=2025-07-01"))
        );
        // A restore gives the original version back: the same pair again is fine...
        map.learn(r1, e1).unwrap();
        // ...a different one is not, nor an emulator version reused for a new one.
        assert!(map.learn(r1, e2).is_err());
        assert!(map.learn("f91c1b32b22d4b0caa7a2ea7cf7d5b36", e1).is_err());
        assert!(is_version_id(r1));
        assert!(!is_version_id("A0CD49F3B4354C96A63AB490132BAF1F"));
        assert_eq!(version_of(&format!("{BASE}/secrets/x/{r1}")), Some(r1));
        assert_eq!(version_of(&format!("{BASE}/secrets/x")), None);
    }

    #[test]
    fn transient_runs_are_found_exactly_where_the_recordings_show_them() {
        let runs = |name: &str| -> Vec<(usize, usize)> {
            let rec = recording(name);
            (0..rec.entries.len())
                .filter(|&i| i == 0 || !is_transient(&rec.entries, i - 1))
                .map(|i| (i, transient_run_end(&rec.entries, i)))
                .filter(|(i, end)| end > i)
                .collect()
        };
        assert_eq!(runs("js/can_restore_a_secret"), [(4, 6), (8, 10), (12, 14)]);
        assert_eq!(runs("rust/purge_secret"), [(2, 4)]);
        // Deleted-GET polls, then the 404 after the recover; entry 8 reads again on its own.
        assert_eq!(
            runs("net/Recover_Returns_Secret_Back_To_Active"),
            [(2, 4), (6, 7), (10, 11)]
        );
        // The final answer of the polls is the 403 of a disabled deleted secret.
        assert_eq!(
            runs("net/Set_With_ContentType_And_Enabled_False"),
            [(8, 10)]
        );
        // A 404 for a name never deleted, and a 401 before the same GET with a token.
        assert!(runs("net/GetDeletedSecretNonExisting").is_empty());
        assert!(runs("js/can_get_a_secret_non_existing").is_empty());
    }

    #[test]
    fn every_recording_replayed_against_its_own_answers_matches() {
        let files = recording_files();
        assert!(files.len() >= 25, "found {} recordings", files.len());
        for (name, path) in files {
            let rec = load(&name, &path).expect("a recording");
            let mirror = Mirror::of(&rec);
            let (outcome, sent) = run(&rec, Mirror::answers(&rec));
            println!("{}", outcome.summary());
            assert!(
                outcome.mismatches.is_empty(),
                "{name}:\n{}",
                details(&outcome)
            );
            assert_eq!(outcome.bad.len(), 0);
            assert_eq!(sent.len(), rec.entries.len(), "{name}");
            for (k, (request, e)) in sent.iter().zip(&rec.entries).enumerate() {
                assert_eq!(request.method, e.request_method, "{name} #{k}");
                assert_eq!(request.bearer, e.has_auth(), "{name} #{k}");
                // Skiptoken requests go to the mirror's own nextLink, which is the recorded
                // one mapped the same way.
                assert_eq!(
                    Some(&request.url),
                    mirror.url(&rec, &e.request_uri).as_ref(),
                    "{name} #{k}"
                );
                assert!(!request.url.contains("7.6-preview"), "{name} #{k}");
                assert_eq!(
                    request.client_request_id.is_some(),
                    e.request_header("x-ms-client-request-id").is_some()
                );
                if e.is_restore()
                    && e.request_body
                        .as_ref()
                        .is_some_and(|b| b["value"].as_str().is_some_and(|v| v.starts_with("KUF6")))
                {
                    let body: Value =
                        serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
                    assert!(
                        body["value"].as_str().unwrap().starts_with("EMU"),
                        "{name} #{k}: restore sends the emulator's blob"
                    );
                }
            }
        }
    }

    #[test]
    fn malformed_blobs_are_sent_as_recorded() {
        let rec = recording("js/can_restore_a_secret_malformed_backup_bytes");
        let (outcome, sent) = run(&rec, Mirror::answers(&rec));
        assert!(outcome.mismatches.is_empty(), "{}", details(&outcome));
        let body: Value = serde_json::from_str(sent[1].body.as_deref().unwrap()).unwrap();
        assert_eq!(&body, rec.entries[1].request_body.as_ref().unwrap());
    }

    #[test]
    fn fewer_transient_answers_than_recorded_match() {
        let rec = recording("net/Recover_Returns_Secret_Back_To_Active");
        let answers: Vec<Got> = Mirror::answers(&rec)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| ![2, 3, 6, 10].contains(i))
            .map(|(_, a)| a)
            .collect();
        let (outcome, sent) = run(&rec, answers);
        assert!(outcome.mismatches.is_empty(), "{}", details(&outcome));
        assert_eq!(outcome.transient_skipped, 4);
        assert_eq!(sent.len(), rec.entries.len() - 4);
        // The second read after the recover (entry 8) was still sent and compared.
        assert_eq!(
            sent.iter()
                .filter(|r| r.method == "GET" && r.url.contains("/secrets/sec-rec-6629/?"))
                .count(),
            2
        );
    }

    #[test]
    fn skipped_transients_are_matched_only_with_their_final_answer() {
        let rec = recording("net/Recover_Returns_Secret_Back_To_Active");
        let mut answers = Mirror::answers(&rec);
        answers[4].status = 500;
        answers.drain(2..4);
        let (outcome, _) = run(&rec, answers);
        assert_eq!(outcome.bad, BTreeSet::from([4]), "{}", details(&outcome));
        assert_eq!(outcome.unconfirmed, BTreeSet::from([2, 3]));
        assert_eq!(outcome.matched(), rec.entries.len() - 3);
    }

    #[test]
    fn more_transient_answers_than_recorded_match() {
        let rec = recording("rust/purge_secret");
        let mut answers = Mirror::answers(&rec);
        let busy = answers[3].clone();
        answers.insert(3, busy.clone());
        answers.insert(3, busy);
        let (outcome, sent) = run(&rec, answers);
        assert!(outcome.mismatches.is_empty(), "{}", details(&outcome));
        assert_eq!(outcome.extra_polls, 2);
        assert_eq!(sent.len(), rec.entries.len() + 2);
    }

    #[test]
    fn a_vault_stuck_on_the_transient_answer_is_reported() {
        let rec = recording("rust/purge_secret");
        let mut answers = Mirror::answers(&rec);
        let busy = answers[2].clone();
        answers.truncate(2);
        answers.extend(std::iter::repeat_n(busy, 10));
        let (outcome, _) = run(&rec, answers);
        assert_eq!(outcome.bad, BTreeSet::from([4]), "{}", details(&outcome));
        assert!(details(&outcome).contains("still 409 Conflict/ObjectIsBeingDeleted"));
    }

    #[test]
    fn a_wrong_final_answer_after_transients_is_reported() {
        // The emulator ignores `enabled: false` on a deleted secret: 404 polls, then 200.
        let rec = recording("net/Set_With_ContentType_And_Enabled_False");
        let mut answers = Mirror::answers(&rec);
        let mut ok = Mirror::of(&rec).answer(&rec, &rec.entries[7]);
        ok.status = 200;
        answers[10] = ok;
        let (outcome, _) = run(&rec, answers);
        assert_eq!(outcome.bad, BTreeSet::from([10]), "{}", details(&outcome));
        assert!(
            details(&outcome).contains("status: expected 403 Forbidden/SecretDisabled, got 200")
        );
    }

    /// A harness that wrongly passes proves nothing: each deliberate fault in an otherwise
    /// perfect answer is reported, on that entry alone.
    #[test]
    fn a_wrong_answer_is_reported_as_a_mismatch() {
        type Fault = fn(&mut Got);
        fn body(got: &mut Got, change: impl FnOnce(&mut Value)) {
            let mut value: Value = serde_json::from_str(&got.body).unwrap();
            change(&mut value);
            got.body = value.to_string();
        }
        let cases: Vec<(&str, usize, &str, Fault)> = vec![
            // PATCH must replace tags wholesale.
            (
                "net/Update_Replaces_Tags_Wholesale",
                2,
                "tags: expected",
                |g| body(g, |v| v["tags"]["a"] = "1".into()),
            ),
            (
                "net/Update_Replaces_Tags_Wholesale",
                2,
                "status: expected 200",
                |g| g.status = 404,
            ),
            // Only Set and Get carry the value.
            (
                "js/updatesecretproperties_roundtrips_contenttype",
                2,
                "fields: expected",
                |g| body(g, |v| v["value"] = "SECRET_VALUE".into()),
            ),
            ("rust/secret_roundtrip", 1, "value: expected", |g| {
                body(g, |v| v["value"] = "x".into())
            }),
            (
                "net/Set_With_NotBefore_And_ExpiresOn",
                1,
                "attributes.exp: expected",
                |g| body(g, |v| v["attributes"]["exp"] = 1784116801.into()),
            ),
            (
                "net/Set_With_NotBefore_And_ExpiresOn",
                2,
                "scheduledPurgeDate",
                |g| {
                    body(g, |v| {
                        v["scheduledPurgeDate"] =
                            (v["scheduledPurgeDate"].as_i64().unwrap() + 1).into()
                    })
                },
            ),
            (
                "net/Set_With_NotBefore_And_ExpiresOn",
                1,
                "attributes.created",
                |g| body(g, |v| v["attributes"]["created"] = 1_000_000_000.into()),
            ),
            (
                "rust/update_secret_properties",
                1,
                "attributes.recoveryLevel",
                |g| {
                    body(g, |v| {
                        v["attributes"]["recoveryLevel"] = "Recoverable+Purgeable".into()
                    })
                },
            ),
            // The version read must be the one the PUT created.
            (
                "net/Set_Twice_Creates_New_Version_Older_Still_Readable",
                3,
                "id: expected",
                |g| {
                    g.body = g.body.replace(
                        "00000000000000001111111111111111",
                        "00000000000000002222222222222222",
                    )
                },
            ),
            ("js/can_get_a_secret_non_existing", 1, "error.code", |g| {
                body(g, |v| v["error"]["code"] = "NotFound".into())
            }),
            ("net/GetDeletedSecretNonExisting", 1, "error.message", |g| {
                body(g, |v| {
                    v["error"]["message"] = "Deleted Secret not found: 1385775400".into()
                })
            }),
            ("rust/purge_secret", 4, "body: expected none", |g| {
                g.body = "{}".into()
            }),
            (
                "js/cant_get_a_disabled_secret",
                2,
                "error.innererror.code",
                |g| {
                    body(g, |v| {
                        drop(v["error"].as_object_mut().unwrap().remove("innererror"))
                    })
                },
            ),
            (
                "js/cant_get_a_disabled_secret",
                0,
                "WWW-Authenticate",
                |g| {
                    g.headers.insert(
                        "www-authenticate".into(),
                        "Bearer realm=\"\", resource=\"https://127.0.0.1\"".into(),
                    );
                },
            ),
            ("rust/secret_roundtrip", 0, "x-ms-request-id", |g| {
                g.headers.remove("x-ms-request-id");
            }),
            (
                "net/GetSecretVersionsNonExisting",
                1,
                "x-ms-client-request-id",
                |g| {
                    g.headers
                        .insert("x-ms-client-request-id".into(), "someone-else".into());
                },
            ),
            // Listings: an item short, a nextLink that drops maxresults, a non-null end.
            (
                "net/GetPropertiesOfSecretVersions_Returns_All_Versions",
                3,
                "missing",
                |g| body(g, |v| drop(v["value"].as_array_mut().unwrap().pop())),
            ),
            (
                "net/GetPropertiesOfSecretVersions_Returns_All_Versions",
                3,
                "lists by id",
                |g| body(g, |v| v["value"].as_array_mut().unwrap().reverse()),
            ),
            (
                "js/can_retrieve_all_versions_of_a_secret_by_page",
                4,
                "maxresults",
                |g| g.body = g.body.replace("&maxresults=1", ""),
            ),
            ("rust/list_secrets", 2, "contentType", |g| {
                body(g, |v| v["value"][0]["contentType"] = "text/plain".into())
            }),
        ];
        for (name, index, expect, fault) in cases {
            let rec = recording(name);
            let mut answers = Mirror::answers(&rec);
            fault(&mut answers[index]);
            let (outcome, _) = run(&rec, answers);
            let report = details(&outcome);
            assert!(
                outcome.bad.contains(&index) && report.contains(expect),
                "{name} #{index}: expected a mismatch with {expect:?}, got:\n{report}"
            );
            assert!(
                outcome.bad.iter().all(|&i| i == index),
                "{name}: only #{index} is wrong, got:\n{report}"
            );
        }
    }

    #[test]
    fn listings_ignore_other_tests_secrets_but_not_the_vaults() {
        let rec = recording("rust/list_secrets");
        // The mirror drops the three foreign secrets; the real answer had them.
        let (outcome, _) = run(&rec, Mirror::answers(&rec));
        assert!(outcome.mismatches.is_empty(), "{}", details(&outcome));
        // A secret the recording never made is unexpected when the emulator lists it.
        let mut answers = Mirror::answers(&rec);
        let mut page: Value = serde_json::from_str(&answers[2].body).unwrap();
        let mut extra = page["value"][0].clone();
        extra["id"] = format!("{BASE}/secrets/zz-leftover").into();
        page["value"].as_array_mut().unwrap().push(extra);
        answers[2].body = page.to_string();
        let (outcome, _) = run(&rec, answers);
        assert!(
            details(&outcome).contains("zz-leftover, which the recorded listing does not have"),
            "{}",
            details(&outcome)
        );
    }

    #[test]
    fn empty_pages_before_the_end_fold_into_one_listing() {
        // The real service sent 1 item, four empty pages and a null nextLink; an emulator
        // that sends the item with nextLink null at once matches.
        let rec = recording("net/Set_With_ContentType_And_Enabled_False");
        let mut answers = Mirror::answers(&rec);
        let mut page: Value = serde_json::from_str(&answers[1].body).unwrap();
        page["nextLink"] = Value::Null;
        answers[1].body = page.to_string();
        answers.drain(2..7);
        let (outcome, sent) = run(&rec, answers);
        assert!(outcome.mismatches.is_empty(), "{}", details(&outcome));
        assert_eq!(outcome.pages_folded, 5);
        assert_eq!(outcome.matched(), rec.entries.len());
        assert_eq!(sent.len(), rec.entries.len() - 5);
        // One that never ends its listing does not.
        let mut answers = Mirror::answers(&rec);
        let mut page: Value = serde_json::from_str(&answers[6].body).unwrap();
        page["nextLink"] = format!("{BASE}/secrets?api-version=2025-07-01&$skiptoken=more").into();
        answers[6].body = page.to_string();
        let (outcome, _) = run(&rec, answers);
        assert!(outcome.bad.contains(&6), "{}", details(&outcome));
    }

    #[test]
    fn retention_other_than_the_recordings_changes_only_the_level_name() {
        assert_eq!(
            expected_recovery_level("CustomizedRecoverable+Purgeable", Some(7), Some(7)),
            "CustomizedRecoverable+Purgeable"
        );
        assert_eq!(
            expected_recovery_level("CustomizedRecoverable+Purgeable", Some(7), Some(90)),
            "Recoverable+Purgeable"
        );
        assert_eq!(
            expected_recovery_level("Recoverable+Purgeable", Some(90), Some(7)),
            "CustomizedRecoverable+Purgeable"
        );
        assert_eq!(
            expected_recovery_level("Recoverable+Purgeable", Some(90), Some(90)),
            "Recoverable+Purgeable"
        );
    }

    #[test]
    fn http_dates_parse_and_format() {
        assert_eq!(
            parse_http_date("Thu, 13 Feb 2025 16:18:25 GMT"),
            Some(1_739_463_505)
        );
        assert_eq!(
            parse_http_date("Tue, 16 Jun 2026 22:34:17 GMT"),
            Some(1_781_649_257)
        );
        assert_eq!(parse_http_date("Wed, 13 Feb 2025 16:18:25 GMT"), None);
        assert_eq!(parse_http_date("2025-02-13T16:18:25Z"), None);
        assert_eq!(http_date(1_739_463_505), "Thu, 13 Feb 2025 16:18:25 GMT");
        let now = unix_now();
        assert_eq!(parse_http_date(&http_date(now)), Some(now));
        assert!(challenge_is_key_vaults(
            "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\""
        ));
        assert!(!challenge_is_key_vaults(
            "Bearer authorization=\"\", resource=\"https://vault.azure.net\""
        ));
    }
}
