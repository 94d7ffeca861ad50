//! The HTTP face of one emulated vault: authentication check, api-version, routing, body
//! parsing and rendering. The rules live in `store.rs`.

use super::error::{KvError, WireError};
use super::store::{
    self, Config, DeletedView, MAX_PAGE, Properties, SecretView, Store, Tags, Version,
};
use crate::gateway::VAULT_RESOURCE;
use crate::tls::PeerAddr;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// The api-versions answered. `7.6-preview.2` is in the list because the JS and Rust
/// recordings were made with it and the service answered them.
pub const API_VERSIONS: &[&str] = &["7.5", "7.6-preview.2", "7.6", "2025-07-01", "2026-04-01"];
/// The api-versions that know `outContentType` (the 2025-07-01 feature).
const CONVERSION_API_VERSIONS: &[&str] = &["2025-07-01", "2026-04-01"];
/// `x-ms-keyvault-service-version`: the newest value in the recordings (June 2026).
const SERVICE_VERSION: &str = "1.9.3449.1";
/// `x-ms-keyvault-region`: the emulator is in no Azure region.
const REGION: &str = "local";
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request bodies larger than this are refused before parsing (a restore of 100 full
/// versions still fits).
const MAX_BODY_BYTES: usize = 4 << 20;

/// One emulated vault: its state and what its challenges name.
pub struct Vault {
    store: Mutex<Store>,
    /// `{authority}/{tenant}`, as the gateway's challenges.
    authorization_uri: String,
    /// Names the vault in ids when a request carries no Host header (the listen address).
    fallback_host: String,
}

impl Vault {
    pub fn new(config: Config, authorization_uri: String, fallback_host: String) -> Self {
        Vault {
            store: Mutex::new(Store::new(config)),
            authorization_uri,
            fallback_host,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // No operation panics halfway through a change; a poisoned lock holds sound state.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Reply {
    Json(Vec<u8>),
    NoContent,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Serves one request. Never fails: every refusal is a Key Vault-shaped response.
pub async fn handle<B>(
    vault: Arc<Vault>,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let host = request_host(&req).unwrap_or_else(|| vault.fallback_host.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let mut response = match respond(&vault, req, &host).await {
        Ok(Reply::Json(body)) => json_response(StatusCode::OK, body),
        Ok(Reply::NoContent) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => {
            let mut r = error_response(&e.wire(&format!("https://{host}")));
            if e == KvError::Unauthorized {
                let challenge = format!(
                    "Bearer authorization=\"{}\", resource=\"{VAULT_RESOURCE}\"",
                    vault.authorization_uri
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            r
        }
    };
    common_headers(&mut response, peer, client_request_id);
    // Names and statuses only: bodies (secret values) are never logged.
    tracing::debug!(%method, %path, status = response.status().as_u16(), "key vault emulator");
    Ok(response)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error_response(e: &WireError) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Inner<'a> {
        code: &'a str,
    }
    #[derive(Serialize)]
    struct Error<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        innererror: Option<Inner<'a>>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        error: Error<'a>,
    }
    let body = Body {
        error: Error {
            code: e.code,
            message: &e.message,
            innererror: e.inner.map(|code| Inner { code }),
        },
    };
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, to_json(&body))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // The rendered types hold strings, integers, booleans and string maps only.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The headers on every recorded response (README, recordings' `ResponseHeaders`); the
/// gateway puts them on the answers it makes itself too.
pub(crate) fn common_headers(
    r: &mut Response<Full<Bytes>>,
    peer: Option<SocketAddr>,
    client_request_id: Option<HeaderValue>,
) {
    let h = r.headers_mut();
    let fixed: [(HeaderName, &'static str); 6] = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::PRAGMA, "no-cache"),
        (header::EXPIRES, "-1"),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000;includeSubDomains",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            HeaderName::from_static("x-ms-keyvault-service-version"),
            SERVICE_VERSION,
        ),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        HeaderName::from_static("x-ms-keyvault-region"),
        HeaderValue::from_static(REGION),
    );
    let dynamic = [
        ("x-ms-request-id", uuid::Uuid::new_v4().to_string()),
        ("x-ms-keyvault-network-info", network_info(peer)),
        (
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        ),
    ];
    for (name, value) in dynamic {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(id) = client_request_id {
        h.insert(HeaderName::from_static("x-ms-client-request-id"), id);
    }
}

fn network_info(peer: Option<SocketAddr>) -> String {
    match peer.map(|p| p.ip().to_canonical()) {
        Some(IpAddr::V6(ip)) => format!("conn_type=Ipv6;addr={ip};act_addr_fam=InterNetworkV6;"),
        Some(IpAddr::V4(ip)) => format!("conn_type=Ipv4;addr={ip};act_addr_fam=InterNetwork;"),
        None => "conn_type=Ipv4;addr=0.0.0.0;act_addr_fam=InterNetwork;".to_owned(),
    }
}

/// The Host the client used (ids and nextLinks name it), if it looks like a host.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let host = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?.to_owned(),
        None => req.uri().authority()?.as_str().to_owned(),
    };
    let plausible = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    plausible.then_some(host)
}

/// The host with an explicit port, as the real service writes nextLinks (`...:443/...`).
fn host_with_port(host: &str) -> String {
    let has_port = match host.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host.contains(':'),
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:443")
    }
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The operations of the secrets data plane (spec: 12 operations).
enum Op<'a> {
    List,
    Set(&'a str),
    Get(&'a str, Option<&'a str>),
    Versions(&'a str),
    Update(&'a str, Option<&'a str>),
    Delete(&'a str),
    Backup(&'a str),
    Restore,
    ListDeleted,
    GetDeleted(&'a str),
    Purge(&'a str),
    Recover(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Op<'a>, KvError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let not_allowed = || KvError::MethodNotAllowed(method.as_str().to_owned());
    let m = method;
    Ok(match segments.as_slice() {
        // `PUT /secrets/` (empty name): 405 "HTTP PUT not allowed" (recorded).
        ["secrets"] | ["secrets", ""] if m == Method::GET => Op::List,
        ["secrets"] | ["secrets", ""] => return Err(not_allowed()),
        ["secrets", "restore"] if m == Method::POST => Op::Restore,
        ["secrets", name] => match *m {
            Method::PUT => Op::Set(name),
            Method::GET => Op::Get(name, None),
            Method::DELETE => Op::Delete(name),
            _ => return Err(not_allowed()),
        },
        // `/secrets/{name}/` is the latest version (recorded for GET and PATCH).
        ["secrets", name, ""] => match *m {
            Method::GET => Op::Get(name, None),
            Method::PATCH => Op::Update(name, None),
            _ => return Err(not_allowed()),
        },
        ["secrets", name, "versions"] if m == Method::GET => Op::Versions(name),
        ["secrets", name, "backup"] if m == Method::POST => Op::Backup(name),
        ["secrets", name, version] => match *m {
            Method::GET => Op::Get(name, Some(version)),
            Method::PATCH => Op::Update(name, Some(version)),
            _ => return Err(not_allowed()),
        },
        ["deletedsecrets"] | ["deletedsecrets", ""] if m == Method::GET => Op::ListDeleted,
        ["deletedsecrets"] | ["deletedsecrets", ""] => return Err(not_allowed()),
        ["deletedsecrets", name] => match *m {
            Method::GET => Op::GetDeleted(name),
            Method::DELETE => Op::Purge(name),
            _ => return Err(not_allowed()),
        },
        ["deletedsecrets", name, "recover"] if m == Method::POST => Op::Recover(name),
        ["deletedsecrets", _, "recover"] => return Err(not_allowed()),
        _ => return Err(KvError::UnknownPath),
    })
}

#[derive(Deserialize, Default)]
struct AttributesBody {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    // `created`, `updated`, `recoveryLevel` and `recoverableDays` are read-only: accepted
    // and ignored (`rust/update_secret_properties.json`), like any unknown field.
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBody {
    value: Option<String>,
    content_type: Option<String>,
    attributes: Option<AttributesBody>,
    tags: Option<Tags>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    content_type: Option<String>,
    attributes: Option<AttributesBody>,
    tags: Option<Tags>,
}

#[derive(Deserialize)]
struct RestoreBody {
    value: Option<String>,
}

fn properties(
    content_type: Option<String>,
    a: Option<AttributesBody>,
    tags: Option<Tags>,
) -> Properties {
    let a = a.unwrap_or_default();
    Properties {
        content_type,
        enabled: a.enabled,
        nbf: a.nbf,
        exp: a.exp,
        tags,
    }
}

/// Reads and parses a JSON body. Parse errors name the position only, never the input
/// (it may hold a secret value).
async fn read_json<T, B>(body: B) -> Result<T, KvError>
where
    T: DeserializeOwned,
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            KvError::BadParameter(format!(
                "The request body could not be read or is larger than {MAX_BODY_BYTES} bytes."
            ))
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KvError::BadParameter(
            "The request body is empty; this operation needs a JSON object.".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        KvError::BadParameter(format!(
            "The request body is not valid JSON for this operation (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

/// `maxresults`: 1 to 25 (spec), default 25; also whether the client gave it (nextLinks
/// repeat it then, recorded).
fn max_results(q: &Query) -> Result<(usize, Option<usize>), KvError> {
    match q.get("maxresults") {
        None => Ok((MAX_PAGE, None)),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok((n, Some(n))),
            // Unrecorded wording.
            _ => Err(KvError::BadParameter(format!(
                "The value '{raw}' of the parameter maxresults is invalid: it must be an integer from 1 to {MAX_PAGE}."
            ))),
        },
    }
}

/// `$skiptoken` is opaque to clients: base64url of the store's continuation key.
fn skip_key(q: &Query) -> Result<Option<String>, KvError> {
    let Some(token) = q.get("$skiptoken") else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| KvError::BadParameter("The $skiptoken is invalid.".into()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attributes {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    created: i64,
    updated: i64,
    recovery_level: &'static str,
    recoverable_days: u32,
}

/// SecretBundle and SecretItem (an item is a bundle without value; list-secrets items
/// have an id without version).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    id: String,
    attributes: Attributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a Tags>,
}

/// DeletedSecretBundle and DeletedSecretItem (never a value in the recordings).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeletedBundle<'a> {
    recovery_id: String,
    deleted_date: i64,
    scheduled_purge_date: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    id: String,
    attributes: Attributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a Tags>,
}

/// `{"value":[...],"nextLink":...}` with an explicit `null` on the last page (recorded).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListResult<T> {
    value: Vec<T>,
    next_link: Option<String>,
}

struct Render<'a> {
    host: &'a str,
    config: Config,
    api_version: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Value {
    With,
    Without,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Id {
    Versioned,
    NameOnly,
}

impl Render<'_> {
    fn attributes(&self, v: &Version) -> Attributes {
        Attributes {
            enabled: v.enabled,
            nbf: v.nbf,
            exp: v.exp,
            created: v.created,
            updated: v.updated,
            recovery_level: self.config.recovery_level(),
            recoverable_days: self.config.recoverable_days,
        }
    }

    fn id(&self, name: &str, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("https://{}/secrets/{name}/{v}", self.host),
            None => format!("https://{}/secrets/{name}", self.host),
        }
    }

    fn bundle<'v>(&self, s: &'v SecretView, value: Value, id: Id) -> Bundle<'v> {
        Bundle {
            value: (value == Value::With).then_some(s.version.value.as_str()),
            content_type: s.version.content_type.as_deref(),
            id: self.id(
                &s.name,
                (id == Id::Versioned).then_some(s.version.id.as_str()),
            ),
            attributes: self.attributes(&s.version),
            tags: s.version.tags.as_ref(),
        }
    }

    fn deleted<'v>(&self, d: &'v DeletedView) -> DeletedBundle<'v> {
        DeletedBundle {
            recovery_id: format!("https://{}/deletedsecrets/{}", self.host, d.name),
            deleted_date: d.deleted_date,
            scheduled_purge_date: d.scheduled_purge_date,
            content_type: d.version.content_type.as_deref(),
            id: self.id(&d.name, Some(&d.version.id)),
            attributes: self.attributes(&d.version),
            tags: d.version.tags.as_ref(),
        }
    }

    /// `https://<host>:<port><path>?api-version=<same>&$skiptoken=<t>[&maxresults=<n>]`
    /// (recorded shape; the spec example shows `maxresults` after the token for
    /// `/secrets` too).
    fn next_link(
        &self,
        path: &str,
        next: Option<String>,
        given_max: Option<usize>,
    ) -> Option<String> {
        next.map(|key| {
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
            let mut link = format!(
                "https://{}{path}?api-version={}&$skiptoken={token}",
                host_with_port(self.host),
                self.api_version
            );
            if let Some(n) = given_max {
                link.push_str(&format!("&maxresults={n}"));
            }
            link
        })
    }

    fn list<I: Serialize>(
        &self,
        path: &str,
        items: Vec<I>,
        next: Option<String>,
        given_max: Option<usize>,
    ) -> Vec<u8> {
        to_json(&ListResult {
            value: items,
            next_link: self.next_link(path, next, given_max),
        })
    }
}

async fn respond<B>(vault: &Vault, req: Request<B>, host: &str) -> Result<Reply, KvError>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    // Authentication first, before api-version or path (recorded: every first request).
    if bearer(&req).is_none() {
        return Err(KvError::Unauthorized);
    }
    let query = Query::parse(req.uri().query());
    let api_version = match query.get("api-version") {
        None => return Err(KvError::MissingApiVersion),
        Some(v) => API_VERSIONS
            .iter()
            .find(|known| **known == v)
            .copied()
            .ok_or_else(|| KvError::UnknownApiVersion(v.to_owned()))?,
    };
    let (parts, body) = req.into_parts();
    let op = route(&parts.method, parts.uri.path())?;
    let now = now_ms();
    let config = vault.store().config();
    let r = Render {
        host,
        config,
        api_version,
    };
    let json = match op {
        Op::List => {
            let (max, given) = max_results(&query)?;
            let skip = skip_key(&query)?;
            let page = vault.store().list(skip.as_deref(), max, now);
            let items: Vec<_> = page
                .items
                .iter()
                .map(|s| r.bundle(s, Value::Without, Id::NameOnly))
                .collect();
            r.list("/secrets", items, page.next, given)
        }
        Op::Versions(name) => {
            let (max, given) = max_results(&query)?;
            let skip = skip_key(&query)?;
            let (name, page) = vault
                .store()
                .list_versions(name, skip.as_deref(), max, now)?;
            let items: Vec<_> = page
                .items
                .iter()
                .map(|s| r.bundle(s, Value::Without, Id::Versioned))
                .collect();
            r.list(
                &format!("/secrets/{name}/versions"),
                items,
                page.next,
                given,
            )
        }
        Op::ListDeleted => {
            let (max, given) = max_results(&query)?;
            let skip = skip_key(&query)?;
            let page = vault.store().list_deleted(skip.as_deref(), max, now);
            let items: Vec<_> = page.items.iter().map(|d| r.deleted(d)).collect();
            r.list("/deletedsecrets", items, page.next, given)
        }
        Op::Get(name, version) => {
            let mut view = vault.store().get(name, version, now)?;
            let out = query
                .get("outContentType")
                .filter(|o| !o.is_empty() && CONVERSION_API_VERSIONS.contains(&api_version));
            if let Some(out) = out {
                view = store::convert(view, out)?;
            }
            to_json(&r.bundle(&view, Value::With, Id::Versioned))
        }
        Op::Set(name) => {
            let b: SetBody = read_json(body).await?;
            let value = b.value.ok_or_else(|| {
                KvError::BadParameter(
                    "The request body has no 'value'; a secret value is required.".into(),
                )
            })?;
            let props = properties(b.content_type, b.attributes, b.tags);
            let view = vault.store().set(name, value, props, now)?;
            to_json(&r.bundle(&view, Value::With, Id::Versioned))
        }
        Op::Update(name, version) => {
            let b: UpdateBody = read_json(body).await?;
            let props = properties(b.content_type, b.attributes, b.tags);
            let view = vault.store().update(name, version, props, now)?;
            to_json(&r.bundle(&view, Value::Without, Id::Versioned))
        }
        Op::Delete(name) => to_json(&r.deleted(&vault.store().delete(name, now)?)),
        Op::GetDeleted(name) => to_json(&r.deleted(&vault.store().get_deleted(name, now)?)),
        Op::Purge(name) => {
            vault.store().purge(name, now)?;
            return Ok(Reply::NoContent);
        }
        Op::Recover(name) => {
            let view = vault.store().recover(name, now)?;
            to_json(&r.bundle(&view, Value::Without, Id::Versioned))
        }
        Op::Backup(name) => {
            #[derive(Serialize)]
            struct BackupResult {
                value: String,
            }
            let value = vault.store().backup(name, now)?;
            to_json(&BackupResult { value })
        }
        Op::Restore => {
            let b: RestoreBody = read_json(body).await?;
            let blob = b.value.ok_or_else(|| {
                KvError::BadParameter(
                    "The request body has no 'value'; a backup blob is required.".into(),
                )
            })?;
            let view = vault.store().restore(&blob, now)?;
            to_json(&r.bundle(&view, Value::Without, Id::Versioned))
        }
    };
    Ok(Reply::Json(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    const HOST: &str = "vault.test:8443";

    fn vault(settle_ms: u64) -> Arc<Vault> {
        Arc::new(Vault::new(
            Config {
                recoverable_days: 90,
                settle_ms,
            },
            "https://login.test/tenant-1".into(),
            "127.0.0.1:1".into(),
        ))
    }

    struct Answer {
        status: u16,
        headers: hyper::HeaderMap,
        body: Json,
    }

    async fn call(
        v: &Arc<Vault>,
        method: &str,
        uri: &str,
        auth: bool,
        body: Option<Json>,
    ) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        if auth {
            b = b.header("authorization", "Bearer anything");
        }
        let body = body.map(|j| j.to_string()).unwrap_or_default();
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        let resp = handle(v.clone(), req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn ok(v: &Arc<Vault>, method: &str, uri: &str, body: Option<Json>) -> Json {
        let a = call(v, method, uri, true, body).await;
        assert_eq!(a.status, 200, "{method} {uri}: {}", a.body);
        a.body
    }

    fn keys(j: &Json) -> Vec<&str> {
        let mut k: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[tokio::test]
    async fn authentication_comes_before_every_other_check() {
        let v = vault(0);
        for uri in [
            "/secrets/x?api-version=1999-01-01",
            "/nowhere",
            "/secrets/bad_name",
        ] {
            let a = call(&v, "GET", uri, false, None).await;
            assert_eq!(a.status, 401);
            assert_eq!(
                a.body,
                json!({"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token."}})
            );
            assert_eq!(
                a.headers["www-authenticate"],
                "Bearer authorization=\"https://login.test/tenant-1\", resource=\"https://vault.azure.net\""
            );
        }
        let mut req = Request::builder()
            .uri("/secrets?api-version=7.6")
            .header("authorization", "Bearer   ")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut()
            .insert(PeerAddr("10.1.2.3:5555".parse().unwrap()));
        let resp = handle(v.clone(), req).await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["x-ms-keyvault-network-info"],
            "conn_type=Ipv4;addr=10.1.2.3;act_addr_fam=InterNetwork;"
        );
    }

    #[tokio::test]
    async fn api_versions() {
        let v = vault(0);
        for ok_version in API_VERSIONS {
            let a = call(
                &v,
                "GET",
                &format!("/secrets?api-version={ok_version}"),
                true,
                None,
            )
            .await;
            assert_eq!(a.status, 200, "{ok_version}");
        }
        let a = call(&v, "GET", "/secrets?api-version=7.4", true, None).await;
        assert_eq!(a.status, 400);
        assert_eq!(
            a.body,
            json!({"error":{"code":"BadParameter","message":"The specified version (7.4) is not recognized. Consider using the latest supported version (2026-04-01)."}})
        );
        let a = call(&v, "GET", "/secrets", true, None).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some("BadParameter"))
        );
        // api-version is checked before the path.
        let a = call(&v, "GET", "/nowhere?api-version=x", true, None).await;
        assert_eq!(a.status, 400);
    }

    #[tokio::test]
    async fn headers_on_every_answer() {
        let v = vault(0);
        let mut req = Request::builder()
            .uri("/secrets/nope?api-version=2025-07-01")
            .header("host", HOST)
            .header("authorization", "Bearer t")
            .header("x-ms-client-request-id", "abc-123")
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.extensions_mut()
            .insert(PeerAddr("[::ffff:192.0.2.7]:1".parse().unwrap()));
        let resp = handle(v.clone(), req).await.unwrap();
        let h = resp.headers();
        assert_eq!(resp.status(), 404);
        assert_eq!(h["content-type"], "application/json; charset=utf-8");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["pragma"], "no-cache");
        assert_eq!(h["expires"], "-1");
        assert_eq!(
            h["strict-transport-security"],
            "max-age=31536000;includeSubDomains"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-ms-client-request-id"], "abc-123");
        assert_eq!(
            h["x-ms-keyvault-network-info"],
            "conn_type=Ipv4;addr=192.0.2.7;act_addr_fam=InterNetwork;"
        );
        assert!(uuid::Uuid::parse_str(h["x-ms-request-id"].to_str().unwrap()).is_ok());
        for name in [
            "x-ms-keyvault-service-version",
            "x-ms-keyvault-region",
            "date",
        ] {
            assert!(h.contains_key(name), "{name}");
        }
        let a = call(&v, "GET", "/secrets/nope?api-version=7.6", true, None).await;
        assert!(!a.headers.contains_key("x-ms-client-request-id"));
    }

    #[tokio::test]
    async fn set_get_update_delete_recover_purge() {
        let v = vault(0);
        let set = ok(
            &v,
            "PUT",
            "/secrets/Db?api-version=2025-07-01",
            Some(json!({"value":"s3","attributes":{}})),
        )
        .await;
        assert_eq!(keys(&set), ["attributes", "id", "value"]);
        assert_eq!(
            keys(&set["attributes"]),
            [
                "created",
                "enabled",
                "recoverableDays",
                "recoveryLevel",
                "updated"
            ]
        );
        assert_eq!(set["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert_eq!(set["attributes"]["recoverableDays"], 90);
        let id = set["id"].as_str().unwrap();
        let version = id
            .strip_prefix("https://vault.test:8443/secrets/Db/")
            .unwrap();
        assert!(store::is_version_id(version));

        let got = ok(&v, "GET", "/secrets/db/?api-version=2025-07-01", None).await;
        assert_eq!(got, set);
        let got = ok(
            &v,
            "GET",
            &format!("/secrets/DB/{version}?api-version=7.6"),
            None,
        )
        .await;
        assert_eq!(got, set);

        let upd = ok(
            &v,
            "PATCH",
            &format!("/secrets/Db/{version}?api-version=2025-07-01"),
            Some(json!({"contentType":"text/plain","attributes":{"enabled":true,"created":1,"recoveryLevel":"x"},"tags":{"a":"1"}})),
        )
        .await;
        assert_eq!(keys(&upd), ["attributes", "contentType", "id", "tags"]);
        assert_eq!(upd["attributes"]["created"], set["attributes"]["created"]);

        let del = ok(&v, "DELETE", "/secrets/Db?api-version=2025-07-01", None).await;
        assert_eq!(
            keys(&del),
            [
                "attributes",
                "contentType",
                "deletedDate",
                "id",
                "recoveryId",
                "scheduledPurgeDate",
                "tags"
            ]
        );
        assert_eq!(
            del["recoveryId"],
            "https://vault.test:8443/deletedsecrets/Db"
        );
        assert_eq!(
            del["scheduledPurgeDate"].as_i64().unwrap() - del["deletedDate"].as_i64().unwrap(),
            90 * 86_400
        );
        let a = call(
            &v,
            "PUT",
            "/secrets/db?api-version=2025-07-01",
            true,
            Some(json!({"value":"x"})),
        )
        .await;
        assert_eq!(a.status, 409);
        assert_eq!(
            a.body["error"]["innererror"]["code"],
            "ObjectIsDeletedButRecoverable"
        );

        let listed = ok(&v, "GET", "/deletedsecrets?api-version=2025-07-01", None).await;
        assert_eq!(listed["value"][0], del);
        assert_eq!(listed["nextLink"], Json::Null);

        let rec = ok(
            &v,
            "POST",
            "/deletedsecrets/db/recover?api-version=2025-07-01",
            None,
        )
        .await;
        assert_eq!(keys(&rec), ["attributes", "contentType", "id", "tags"]);
        ok(&v, "DELETE", "/secrets/Db?api-version=2025-07-01", None).await;
        let a = call(
            &v,
            "DELETE",
            "/deletedsecrets/db?api-version=2025-07-01",
            true,
            None,
        )
        .await;
        assert_eq!(a.status, 204);
        assert_eq!(a.body, Json::Null);
        assert!(!a.headers.contains_key("content-type"));
        assert!(a.headers.contains_key("x-ms-request-id"));
        let a = call(
            &v,
            "DELETE",
            "/deletedsecrets/db?api-version=2025-07-01",
            true,
            None,
        )
        .await;
        assert_eq!(a.status, 404);
    }

    #[tokio::test]
    async fn refusals_match_the_recordings() {
        let v = vault(0);
        let a = call(
            &v,
            "PUT",
            "/secrets/?api-version=7.6",
            true,
            Some(json!({"value":"x"})),
        )
        .await;
        assert_eq!(
            (a.status, a.body.clone()),
            (
                405,
                json!({"error":{"code":"MethodNotAllowed","message":"HTTP PUT not allowed"}})
            )
        );
        ok(
            &v,
            "PUT",
            "/secrets/off?api-version=7.6",
            Some(json!({"value":"x","attributes":{"enabled":false}})),
        )
        .await;
        let a = call(&v, "GET", "/secrets/off/?api-version=7.6", true, None).await;
        assert_eq!(
            (a.status, a.body),
            (
                403,
                json!({"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}})
            )
        );
        ok(
            &v,
            "PUT",
            "/secrets/pfx?api-version=2025-07-01",
            Some(json!({"value":"x","contentType":"application/x-pkcs12"})),
        )
        .await;
        let a = call(
            &v,
            "GET",
            "/secrets/pfx/?api-version=2025-07-01&outContentType=application%2Fx-pem-file",
            true,
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error":{"code":"BadParameter","message":"The 'Unsupported' to 'PEM' transformation is not supported. Only PFX to PEM transformation is supported."}})
            )
        );
        let a = call(&v, "GET", "/secrets/bad_name?api-version=7.6", true, None).await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error":{"code":"BadParameter","message":"The request URI contains an invalid name: bad_name"}})
            )
        );
        let a = call(
            &v,
            "POST",
            "/secrets/restore?api-version=2025-07-01",
            true,
            Some(json!({"value":"bm9uLWV4aXN0aW5n"})),
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error":{"code":"Malformed backup blob","message":"Backup blob is corrupt."}})
            )
        );
        let a = call(
            &v,
            "GET",
            "/secrets/2063537832/versions?api-version=2025-07-01",
            true,
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (200, json!({"value":[],"nextLink":null}))
        );
        for (method, uri) in [
            ("DELETE", "/secrets/2063102017"),
            ("GET", "/deletedsecrets/1385775400"),
            ("POST", "/deletedsecrets/1752563589/recover"),
        ] {
            let a = call(
                &v,
                method,
                &format!("{uri}?api-version=2025-07-01"),
                true,
                None,
            )
            .await;
            assert_eq!(a.status, 404, "{method} {uri}");
            assert!(
                a.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("A secret with (name/id) "),
            );
        }
    }

    #[tokio::test]
    async fn bad_bodies_and_parameters() {
        let v = vault(0);
        for body in [
            None,
            Some(json!({"contentType":"x"})),
            Some(json!({"value": 987_654})),
            Some(json!([1])),
        ] {
            let a = call(&v, "PUT", "/secrets/x?api-version=7.6", true, body).await;
            assert_eq!(
                (a.status, a.body["error"]["code"].as_str()),
                (400, Some("BadParameter"))
            );
            assert!(!a.body.to_string().contains("987654"), "no input echoed");
        }
        for max in ["0", "26", "x", ""] {
            let a = call(
                &v,
                "GET",
                &format!("/secrets?api-version=7.6&maxresults={max}"),
                true,
                None,
            )
            .await;
            assert_eq!(a.status, 400, "maxresults={max}");
        }
        let a = call(
            &v,
            "GET",
            "/secrets?api-version=7.6&$skiptoken=***",
            true,
            None,
        )
        .await;
        assert_eq!(a.status, 400);
        let a = call(&v, "GET", "/keys?api-version=7.6", true, None).await;
        assert_eq!(a.status, 404);
        let a = call(&v, "POST", "/secrets?api-version=7.6", true, None).await;
        assert_eq!(a.status, 405);
    }

    #[tokio::test]
    async fn lists_page_with_absolute_next_links() {
        let v = vault(0);
        for n in ["c", "A", "b"] {
            ok(
                &v,
                "PUT",
                &format!("/secrets/{n}?api-version=7.6"),
                Some(json!({"value":"v","tags":{"t":"1"}})),
            )
            .await;
        }
        let mut names = Vec::new();
        let mut uri = "/secrets?api-version=7.6&maxresults=2".to_owned();
        loop {
            let page = ok(&v, "GET", &uri, None).await;
            for item in page["value"].as_array().unwrap() {
                assert_eq!(keys(item), ["attributes", "id", "tags"]);
                names.push(
                    item["id"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
            match page["nextLink"].as_str() {
                Some(link) => {
                    let rest = link
                        .strip_prefix("https://vault.test:8443/secrets?api-version=7.6&$skiptoken=")
                        .unwrap();
                    assert!(rest.ends_with("&maxresults=2"), "{link}");
                    uri = link
                        .strip_prefix("https://vault.test:8443")
                        .unwrap()
                        .to_owned();
                }
                None => {
                    assert!(page.as_object().unwrap().contains_key("nextLink"));
                    break;
                }
            }
        }
        assert_eq!(names, ["A", "b", "c"]);

        for i in 0..3 {
            ok(
                &v,
                "PUT",
                "/secrets/multi?api-version=2025-07-01",
                Some(json!({"value": format!("v{i}")})),
            )
            .await;
        }
        let page = ok(
            &v,
            "GET",
            "/secrets/multi/versions?api-version=2025-07-01&maxresults=1",
            None,
        )
        .await;
        let link = page["nextLink"].as_str().unwrap();
        assert!(link.starts_with(
            "https://vault.test:8443/secrets/multi/versions?api-version=2025-07-01&$skiptoken="
        ));
        assert!(link.ends_with("&maxresults=1"));
        let page = ok(
            &v,
            "GET",
            "/secrets/multi/versions?api-version=2025-07-01",
            None,
        )
        .await;
        let ids: Vec<&str> = page["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!((ids.len(), ids.clone()), (3, sorted));
        assert_eq!(page["nextLink"], Json::Null);
    }

    #[tokio::test]
    async fn next_link_names_port_443_when_the_host_has_none() {
        assert_eq!(host_with_port("kv.example"), "kv.example:443");
        assert_eq!(host_with_port("kv.example:8443"), "kv.example:8443");
        assert_eq!(host_with_port("[::1]"), "[::1]:443");
        assert_eq!(host_with_port("[::1]:9"), "[::1]:9");
    }

    #[tokio::test]
    async fn backup_restore_round_trip_and_conflict() {
        let v = vault(0);
        let set = ok(
            &v,
            "PUT",
            "/secrets/b?api-version=7.6",
            Some(json!({"value":"RSA","contentType":"c"})),
        )
        .await;
        let blob = ok(&v, "POST", "/secrets/b/backup?api-version=7.6", None).await;
        assert_eq!(keys(&blob), ["value"]);
        let a = call(
            &v,
            "POST",
            "/secrets/restore?api-version=7.6",
            true,
            Some(blob.clone()),
        )
        .await;
        assert_eq!(a.status, 409);
        let id = set["id"].as_str().unwrap();
        assert!(
            a.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!(
                    "There was a conflict restoring the secret '{id}'."
                ))
        );
        ok(&v, "DELETE", "/secrets/b?api-version=7.6", None).await;
        let a = call(
            &v,
            "DELETE",
            "/deletedsecrets/b?api-version=7.6",
            true,
            None,
        )
        .await;
        assert_eq!(a.status, 204);
        let restored = ok(&v, "POST", "/secrets/restore?api-version=7.6", Some(blob)).await;
        let mut expected = set.clone();
        expected.as_object_mut().unwrap().remove("value");
        assert_eq!(restored, expected);
    }

    #[tokio::test]
    async fn settling_answers() {
        let v = vault(60_000);
        ok(
            &v,
            "PUT",
            "/secrets/s?api-version=7.6",
            Some(json!({"value":"v"})),
        )
        .await;
        ok(&v, "DELETE", "/secrets/s?api-version=7.6", None).await;
        let a = call(&v, "GET", "/deletedsecrets/s?api-version=7.6", true, None).await;
        assert_eq!(
            (a.status, a.body),
            (
                404,
                json!({"error":{"code":"SecretNotFound","message":"Deleted Secret not found: s"}})
            )
        );
        let a = call(
            &v,
            "DELETE",
            "/deletedsecrets/s?api-version=7.6",
            true,
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (
                409,
                json!({"error":{"code":"Conflict","message":"Secret is currently being deleted.","innererror":{"code":"ObjectIsBeingDeleted"}}})
            )
        );
    }
}
