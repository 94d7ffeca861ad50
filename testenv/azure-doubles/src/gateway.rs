//! The vault gateway in front of the Key Vault emulator: it plays Key Vault's
//! authentication and authorization, which the emulator does not, and injects faults.
//!
//! Order per request: count it; challenge without a bearer token; verify the token;
//! apply an injected fault; check the identity's access to the named secret; forward
//! (with the client's Host header) to this listener's upstream.
//!
//! Each `--vault-listen` is one gateway, paired in order with an `--upstream`; all of them
//! share one registry (identities, access, faults, counters).

use crate::keyvault::api::common_headers;
use crate::state::{FaultKind, Registry};
use crate::tls::PeerAddr;
use crate::tokens::TokenIssuer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

pub struct Gateway {
    pub registry: Arc<Registry>,
    pub tokens: Arc<TokenIssuer>,
    /// Where challenges send clients for tokens: `{authority}/{tenant}`.
    pub authorization_uri: String,
    pub upstream: Option<reqwest::Url>,
    pub http: reqwest::Client,
}

/// Returned instead of a response to make the server drop the connection unanswered.
#[derive(Debug)]
pub struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset injected by the gateway")
    }
}

impl std::error::Error for InjectedReset {}

/// The secret a Key Vault path names, if any: `/secrets/{name}[/...]` and
/// `/deletedsecrets/{name}`; `/secrets` (list) and `/secrets/restore` name none.
pub fn secret_name(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    let collection = parts.next()?;
    let name = parts.next().filter(|n| !n.is_empty())?;
    match collection {
        "secrets" if name != "restore" => Some(name),
        "deletedsecrets" => Some(name),
        _ => None,
    }
}

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e`).
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn vault_error(
    status: StatusCode,
    code: &str,
    message: String,
    inner: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    json_response(status, &json!({ "error": error }))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

impl Gateway {
    fn challenge(&self, message: &str) -> Response<Full<Bytes>> {
        let mut response = vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            message.to_owned(),
            None,
        );
        let value = format!(
            "Bearer authorization=\"{}\", resource=\"{VAULT_RESOURCE}\"",
            self.authorization_uri
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, v);
        }
        response
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, InjectedReset> {
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
        let mut response = self.decide(req).await?;
        // Answers the gateway makes itself (challenge, refusals, faults) carry Key Vault's
        // headers as the emulator's do; forwarded answers keep the backend's own.
        if !response
            .headers()
            .contains_key("x-ms-keyvault-service-version")
        {
            common_headers(&mut response, peer, client_request_id);
        }
        Ok(response)
    }

    async fn decide(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, InjectedReset> {
        let secret = secret_name(req.uri().path()).map(str::to_owned);
        let secret = secret.as_deref();
        self.registry.count_vault(req.method().as_str(), secret);

        let Some(token) = bearer(&req) else {
            return Ok(
                self.challenge("AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.")
            );
        };
        let claims = match self.tokens.verify(token, VAULT_RESOURCE) {
            Ok(claims) => claims,
            Err(why) => {
                tracing::info!(%why, "refused a bearer token");
                return Ok(self.challenge("AKV10022: Invalid audience, issuer, signature or lifetime of the access token."));
            }
        };
        self.registry
            .count_vault_authorized(req.method().as_str(), secret);

        if let Some(fault) = self.registry.take_fault(secret, &claims.appid) {
            match fault.kind {
                FaultKind::Throttle => {
                    let status = StatusCode::from_u16(fault.status.unwrap_or(429))
                        .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
                    let mut response = vault_error(
                        status,
                        "Throttled",
                        "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached".into(),
                        None,
                    );
                    if !fault.without_retry_after {
                        let retry_after = fault.retry_after_seconds.unwrap_or(1);
                        response
                            .headers_mut()
                            .insert(hyper::header::RETRY_AFTER, retry_after.into());
                    }
                    return Ok(response);
                }
                FaultKind::Error => {
                    let status = StatusCode::from_u16(fault.status.unwrap_or(503))
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let code = status
                        .canonical_reason()
                        .unwrap_or("Error")
                        .replace(' ', "");
                    let mut response = vault_error(
                        status,
                        &code,
                        format!("Injected fault: HTTP {}.", status.as_u16()),
                        None,
                    );
                    if let Some(secs) = fault.retry_after_seconds {
                        response
                            .headers_mut()
                            .insert(hyper::header::RETRY_AFTER, secs.into());
                    }
                    return Ok(response);
                }
                FaultKind::Delay => {
                    tokio::time::sleep(Duration::from_millis(fault.delay_ms.unwrap_or(1000))).await
                }
                FaultKind::Reset => return Err(InjectedReset),
            }
        }

        // Access is decided on the path as sent; a dot segment would name one secret here
        // and another once the forwarded URL is resolved.
        if has_dot_segment(req.uri().path()) {
            return Ok(vault_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                format!(
                    "The request URI contains an invalid path: {}",
                    req.uri().path()
                ),
                None,
            ));
        }
        if !self.registry.access_allows(&claims.appid, secret) {
            let action = match (req.method().as_str(), secret) {
                ("GET", Some(_)) => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                ("GET", None) => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                _ => "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            };
            let message = format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={}\r\nAction: '{action}'\r\nResource: 'secrets/{}'\r\nAssignment: (not found)\r\nDecisionReason: null\r\n",
                claims.appid,
                claims.sub,
                secret.unwrap_or("")
            );
            return Ok(vault_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                message,
                Some("ForbiddenByRbac"),
            ));
        }

        Ok(self.forward(req).await)
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(upstream) = &self.upstream else {
            return vault_error(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "No Key Vault emulator is configured behind this gateway.".into(),
                None,
            );
        };
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return vault_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("could not read the request body: {e}"),
                    None,
                );
            }
        };
        let mut url = upstream.clone();
        url.set_path(parts.uri.path());
        url.set_query(parts.uri.query());
        let mut outgoing = self.http.request(parts.method, url);
        // The client's Host goes along, so ids and nextLinks in the emulator's bodies name
        // the address the client used, not the upstream's.
        for (name, value) in &parts.headers {
            if name != hyper::header::AUTHORIZATION && name != hyper::header::CONTENT_LENGTH {
                outgoing = outgoing.header(name, value);
            }
        }
        // The emulator accepts any non-empty token; the real check happened above.
        outgoing = outgoing.header(hyper::header::AUTHORIZATION, "Bearer gateway-verified");
        let upstream_response = match outgoing.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                return vault_error(
                    StatusCode::BAD_GATEWAY,
                    "BadGateway",
                    format!("The Key Vault emulator did not answer: {e}"),
                    None,
                );
            }
        };
        let status = upstream_response.status();
        let headers = upstream_response.headers().clone();
        let bytes = upstream_response.bytes().await.unwrap_or_default();
        let mut response = Response::new(Full::new(bytes));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if name != hyper::header::TRANSFER_ENCODING
                && name != hyper::header::CONNECTION
                && name != hyper::header::CONTENT_LENGTH
            {
                response.headers_mut().append(name, value.clone());
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::{has_dot_segment, secret_name};

    #[test]
    fn dot_segments_are_found_also_percent_encoded() {
        assert!(has_dot_segment("/secrets/allowed/../other"));
        assert!(has_dot_segment("/secrets/allowed/%2E%2e/other"));
        assert!(has_dot_segment("/secrets/./other"));
        assert!(!has_dot_segment("/secrets/a.b/"));
        assert!(!has_dot_segment("/secrets/db/0123"));
    }

    #[test]
    fn secret_name_from_key_vault_paths() {
        assert_eq!(secret_name("/secrets/db/"), Some("db"));
        assert_eq!(secret_name("/secrets/db/0123"), Some("db"));
        assert_eq!(secret_name("/secrets/db/versions"), Some("db"));
        assert_eq!(secret_name("/deletedsecrets/db"), Some("db"));
        assert_eq!(secret_name("/secrets"), None);
        assert_eq!(secret_name("/secrets/"), None);
        assert_eq!(secret_name("/secrets/restore"), None);
        assert_eq!(secret_name("/keys/k"), None);
    }
}
