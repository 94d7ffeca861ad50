//! The Entra token endpoint (workload identity federation) and the App Service style
//! managed identity endpoint, answering in the shapes `azure_identity` parses.

use crate::oidc::{AssertionError, IssuerVerifier};
use crate::state::Registry;
use crate::tokens::TokenIssuer;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const MANAGED_IDENTITY_PATH: &str = "/msi/token";

pub struct IdentityState {
    pub registry: Arc<Registry>,
    pub tokens: Arc<TokenIssuer>,
    pub verifier: IssuerVerifier,
    pub tenant_id: String,
    pub identity_header: String,
}

pub fn router(state: Arc<IdentityState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
        .route(MANAGED_IDENTITY_PATH, get(managed_identity_token))
        .with_state(state)
}

/// The form `azure_identity`'s client assertion credential posts.
#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_assertion: String,
    #[serde(default)]
    client_assertion_type: String,
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    scope: String,
}

/// An error in Entra's JSON shape; `azure_identity` reads `error_codes` and
/// `error_description`.
fn entra_error(status: StatusCode, error: &str, code: u32, description: String) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace_id}"),
        "error_codes": [code],
        "timestamp": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "trace_id": trace_id,
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    });
    (status, Json(body)).into_response()
}

async fn entra_token(
    State(s): State<Arc<IdentityState>>,
    Path(tenant): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    let client_id = form.client_id.as_str();
    s.registry
        .count_token(if client_id.is_empty() { "-" } else { client_id });
    if let Some(fault) = s.registry.token_fault(client_id) {
        // A reset never gets here: `reset_token_requests` drops the connection first.
        return entra_error(
            StatusCode::from_u16(fault.status.unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "temporarily_unavailable",
            fault.code.unwrap_or(50000),
            "There was an error issuing a token or an authorization code. Please try again later."
                .into(),
        );
    }
    if tenant != s.tenant_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID."
            ),
        );
    }
    if form.grant_type != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.".into(),
        );
    }
    if form.client_assertion_type != ASSERTION_TYPE || form.client_assertion.is_empty() {
        return entra_error(StatusCode::BAD_REQUEST, "invalid_request", 90014, "The request body must contain the client_assertion and a supported client_assertion_type.".into());
    }
    let Some(resource) = form
        .scope
        .strip_suffix("/.default")
        .filter(|r| !r.is_empty())
    else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope '{}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                form.scope
            ),
        );
    };
    if client_id.is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.".into(),
        );
    }
    s.tokens.witness_assertion(&form.client_assertion);
    let claims = match s.verifier.verify(&form.client_assertion).await {
        Ok(claims) => claims,
        Err(e) => return assertion_error(e),
    };
    match s.registry.federated_subject_allowed(client_id, &claims.sub) {
        None => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory."
                ),
            );
        }
        Some(false) => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700213,
                format!(
                    "No matching federated identity record found for presented assertion subject '{}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                    claims.sub
                ),
            );
        }
        Some(true) => {}
    }
    let lifetime = s.registry.token_lifetime(client_id);
    match s
        .tokens
        .issue(client_id, &tenant, resource, "workload", lifetime)
    {
        Ok((access_token, _)) => Json(json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }))
        .into_response(),
        Err(e) => entra_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            format!("could not sign the token: {e}"),
        ),
    }
}

fn assertion_error(e: AssertionError) -> Response {
    let (code, description) = match e {
        AssertionError::Malformed(why) => (50027, format!("JWT token is invalid or malformed ({why}).")),
        AssertionError::Signature => (700027, "Client assertion failed signature validation.".to_owned()),
        AssertionError::Expired => (700024, "Client assertion is not within its valid time range.".to_owned()),
        AssertionError::Issuer => (700211, "No matching federated identity record found for presented assertion issuer.".to_owned()),
        AssertionError::Audience => (700212, "No matching federated identity record found for presented assertion audience 'api://AzureADTokenExchange'.".to_owned()),
        AssertionError::KeysUnavailable(why) => {
            return entra_error(StatusCode::BAD_REQUEST, "invalid_client", 50166, format!("Request to External OIDC endpoint failed: {why}."));
        }
    };
    entra_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        code,
        description,
    )
}

#[derive(Debug, Deserialize)]
struct ManagedIdentityQuery {
    #[serde(rename = "api-version", default)]
    api_version: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    client_id: Option<String>,
}

fn msi_error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(json!({ "statusCode": status.as_u16(), "message": message })),
    )
        .into_response()
}

async fn managed_identity_token(
    State(s): State<Arc<IdentityState>>,
    headers: HeaderMap,
    Query(q): Query<ManagedIdentityQuery>,
) -> Response {
    let client_id = q.client_id.clone().unwrap_or_default();
    s.registry.count_managed(if client_id.is_empty() {
        "-"
    } else {
        &client_id
    });
    let header_ok = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        == Some(s.identity_header.as_str());
    if !header_ok {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or wrong.".into(),
        );
    }
    if q.api_version != "2019-08-01" {
        return msi_error(
            StatusCode::BAD_REQUEST,
            format!("Unsupported api-version '{}'.", q.api_version),
        );
    }
    if q.resource.is_empty() {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "The resource parameter is required.".into(),
        );
    }
    if client_id.is_empty() {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "No system-assigned identity is enabled; pass client_id of a user-assigned identity."
                .into(),
        );
    }
    if !s.registry.is_managed(&client_id) {
        return msi_error(
            StatusCode::BAD_REQUEST,
            format!(
                "No user-assigned identity with client_id '{client_id}' is assigned to this resource."
            ),
        );
    }
    let lifetime = s.registry.token_lifetime(&client_id);
    match s
        .tokens
        .issue(&client_id, &s.tenant_id, &q.resource, "managed", lifetime)
    {
        // `expires_on` is a string of epoch seconds in the App Service protocol.
        Ok((access_token, expires_on)) => Json(json!({
            "access_token": access_token,
            "expires_on": expires_on.to_string(),
            "resource": q.resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }))
        .into_response(),
        Err(e) => msi_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not sign the token: {e}"),
        ),
    }
}

/// Serves the identity endpoints, first dropping unanswered the token requests of a
/// client id whose token fault is a `reset` (an endpoint that is down). The client id is
/// in the form body, so the body is read here and handed on to the router.
pub async fn handle(
    router: Router,
    registry: Arc<Registry>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, crate::gateway::InjectedReset> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.uri.path().ends_with("/oauth2/v2.0/token") {
        let client_id = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if let Some(fault) = registry.token_fault(&client_id)
            && fault.kind == crate::state::TokenFaultKind::Reset
        {
            registry.count_token(&client_id);
            return Err(crate::gateway::InjectedReset);
        }
    }
    let req = hyper::Request::from_parts(parts, axum::body::Body::from(body));
    Ok(router
        .oneshot(req)
        .await
        .unwrap_or_else(|never| match never {}))
}
