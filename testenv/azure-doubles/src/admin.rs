//! The admin API (plain HTTP on loopback) that tests and benchmarks use to script the
//! doubles. Documented in the README's development section.

use crate::state::{Access, Fault, Registry, TokenFault};
use crate::tokens::TokenIssuer;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedCredential {
    subjects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManagedIdentity {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessGrant {
    secrets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultFilter {
    secret: Option<String>,
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLifetime {
    seconds: u64,
}

fn found(removed: bool) -> StatusCode {
    if removed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

pub fn router(registry: Arc<Registry>, tokens: Arc<TokenIssuer>) -> Router {
    // The tokens issued and the assertions seen, for the tests' leak scan.
    let ledger = Router::new().route(
        "/tokens",
        get(move || {
            let tokens = tokens.clone();
            async move { Json(tokens.ledger_snapshot()) }
        }),
    );
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/federated-credentials/{client_id}",
            put(
                |State(r): State<Arc<Registry>>,
                 Path(id): Path<String>,
                 Json(body): Json<FederatedCredential>| async move {
                    r.set_federated(&id, body.subjects);
                    StatusCode::NO_CONTENT
                },
            )
            .delete(
                |State(r): State<Arc<Registry>>, Path(id): Path<String>| async move {
                    found(r.remove_federated(&id))
                },
            ),
        )
        .route(
            "/managed-identities/{client_id}",
            put(
                |State(r): State<Arc<Registry>>,
                 Path(id): Path<String>,
                 Json(_): Json<ManagedIdentity>| async move {
                    r.set_managed(&id);
                    StatusCode::NO_CONTENT
                },
            )
            .delete(
                |State(r): State<Arc<Registry>>, Path(id): Path<String>| async move {
                    found(r.remove_managed(&id))
                },
            ),
        )
        .route(
            "/access/{client_id}",
            put(
                |State(r): State<Arc<Registry>>,
                 Path(id): Path<String>,
                 Json(body): Json<AccessGrant>| async move {
                    r.set_access(&id, Access::from_names(&body.secrets));
                    StatusCode::NO_CONTENT
                },
            )
            .delete(
                |State(r): State<Arc<Registry>>, Path(id): Path<String>| async move {
                    found(r.remove_access(&id))
                },
            ),
        )
        .route(
            "/faults",
            put(
                |State(r): State<Arc<Registry>>, Json(fault): Json<Fault>| async move {
                    r.add_fault(fault);
                    StatusCode::NO_CONTENT
                },
            )
            .delete(
                |State(r): State<Arc<Registry>>, Query(filter): Query<FaultFilter>| async move {
                    r.clear_faults(filter.secret.as_deref(), filter.client_id.as_deref());
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/token-faults/{client_id}",
            put(
                |State(r): State<Arc<Registry>>,
                 Path(id): Path<String>,
                 Json(fault): Json<TokenFault>| async move {
                    r.set_token_fault(&id, fault);
                    StatusCode::NO_CONTENT
                },
            )
            .delete(
                |State(r): State<Arc<Registry>>, Path(id): Path<String>| async move {
                    found(r.remove_token_fault(&id))
                },
            ),
        )
        .route(
            "/token-lifetimes/{client_id}",
            put(
                |State(r): State<Arc<Registry>>,
                 Path(id): Path<String>,
                 Json(body): Json<TokenLifetime>| async move {
                    r.set_token_lifetime(&id, body.seconds);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/stats",
            get(|State(r): State<Arc<Registry>>| async move { Json(r.stats_json()) }),
        )
        .with_state(registry)
        .merge(ledger)
}
