//! The official Rust Key Vault secrets client against the project's Key Vault emulator,
//! straight (not through the gateway): the scripted scenario that
//! `hack/keyvault-clients.sh` also runs with the official Python and Go clients
//! (testenv/keyvault-clients/). Each step asserts and a failure names its step; secret
//! values are random and never printed.

mod common;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::StatusCode;
use azure_security_keyvault_secrets::models::{
    KeyVaultError, SecretAttributes, SecretClientGetSecretOptions,
    SecretClientListSecretPropertiesOptions, SecretClientListSecretPropertiesVersionsOptions,
    SecretClientUpdateSecretPropertiesOptions, SetSecretParameters,
    UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use common::*;
use futures::TryStreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_VERSION: &str = "2025-07-01";
/// Any non-empty bearer token is accepted by the emulator.
const FAKE_TOKEN: &str = "vaultsync-keyvault-clients-fake-token";
/// What the standard challenge (`resource="https://vault.azure.net"`) must make the client ask for.
const EXPECTED_SCOPE: &str = "https://vault.azure.net/.default";
/// Our own secrets in the list: the scenario's plus the fillers. With a page size of 2 the
/// list walks at least two pages, whatever else the vault holds.
const FILLERS: usize = 2;
const PAGE_SIZE: i32 = 2;
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
const CONTENT_TYPE: &str = "text/plain";

/// Hands out one fixed fake token, valid until 2099, and records the scopes asked for.
#[derive(Debug, Default)]
struct StaticCredential {
    scopes: Mutex<BTreeSet<String>>,
}

#[async_trait::async_trait]
impl TokenCredential for StaticCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .expect("scopes lock")
            .extend(scopes.iter().map(|s| s.to_string()));
        // 2099-01-01T00:00:00Z
        let far_future =
            time::OffsetDateTime::from_unix_timestamp(4_070_908_800).expect("a valid timestamp");
        Ok(AccessToken::new(FAKE_TOKEN, far_future))
    }
}

/// A failed step: its name and what went wrong (never a secret value).
struct Failure {
    step: &'static str,
    message: String,
}

type Step<T> = Result<T, Failure>;

/// Fails the step with a formatted message unless the condition holds.
macro_rules! ensure {
    ($step:expr, $ok:expr, $($message:tt)+) => {
        if !$ok {
            return Err(Failure {
                step: $step,
                message: format!($($message)+),
            });
        }
    };
}

fn sdk<T>(step: &'static str, what: &str, result: azure_core::Result<T>) -> Step<T> {
    result.map_err(|e| Failure {
        step,
        message: format!("{what}: {e}"),
    })
}

fn status_of(err: &azure_core::Error) -> Option<StatusCode> {
    err.http_status()
}

fn tags() -> HashMap<String, String> {
    HashMap::from([
        ("scenario".to_owned(), "keyvault-clients".to_owned()),
        ("client".to_owned(), "rust".to_owned()),
    ])
}

fn is_version(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_value(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn emulator_client(credential: Arc<StaticCredential>) -> SecretClient {
    SecretClient::new(
        &env("VAULTSYNC_TEST_EMULATOR_URL"),
        credential,
        Some(SecretClientOptions {
            api_version: API_VERSION.into(),
            // Trusts the environment's CA; no SDK retries, so each answer is seen as sent.
            client_options: azure_client_options(),
            // The emulator's host (127.0.0.1) can never match the challenge's resource.
            verify_challenge_resource: Some(false),
        }),
    )
    .expect("a SecretClient for the emulator")
}

struct Scenario {
    client: SecretClient,
    credential: Arc<StaticCredential>,
    name: String,
    fillers: Vec<String>,
    /// Names that may still exist, for the best-effort clean-up after a failure.
    to_clean: BTreeSet<String>,
}

impl Scenario {
    fn version_of(secret: &impl ResourceExt) -> Option<String> {
        secret.resource_id().ok().and_then(|id| id.version)
    }

    async fn get(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> azure_core::Result<azure_security_keyvault_secrets::models::Secret> {
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        self.client
            .get_secret(name, Some(options))
            .await?
            .into_model()
    }

    async fn set(
        &self,
        name: &str,
        value: &str,
        with_tags: bool,
    ) -> azure_core::Result<azure_security_keyvault_secrets::models::Secret> {
        let params = SetSecretParameters {
            value: Some(value.to_owned()),
            tags: with_tags.then(tags),
            content_type: with_tags.then(|| CONTENT_TYPE.to_owned()),
            ..Default::default()
        };
        self.client
            .set_secret(name, params.try_into()?, None)
            .await?
            .into_model()
    }

    async fn set_enabled(
        &self,
        version: &str,
        enabled: bool,
    ) -> azure_core::Result<azure_security_keyvault_secrets::models::Secret> {
        let params = UpdateSecretPropertiesParameters {
            secret_attributes: Some(SecretAttributes {
                enabled: Some(enabled),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = SecretClientUpdateSecretPropertiesOptions {
            secret_version: Some(version.to_owned()),
            ..Default::default()
        };
        self.client
            .update_secret_properties(&self.name, params.try_into()?, Some(options))
            .await?
            .into_model()
    }

    /// Polls the deleted secret until it is there, as the Python and .NET delete pollers do
    /// (Key Vault answers 404 while the deletion is in progress); the Rust client has none.
    async fn wait_deleted(&self, step: &'static str, name: &str) -> Step<()> {
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            match self.client.get_deleted_secret(name, None).await {
                Ok(_) => return Ok(()),
                Err(e) if status_of(&e) == Some(StatusCode::NotFound) => {}
                Err(e) => return sdk(step, &format!("polling the deleted secret {name}"), Err(e)),
            }
            ensure!(
                step,
                Instant::now() < deadline,
                "{name} not in deleted secrets {POLL_TIMEOUT:?} after the delete"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn run(&mut self) -> Step<()> {
        let value1 = random_value("first");
        let value2 = random_value("second");

        let step = "set-first";
        self.to_clean.insert(self.name.clone());
        let s = sdk(
            step,
            "set_secret",
            self.set(&self.name, &value1, true).await,
        )?;
        let v1 = Self::version_of(&s).unwrap_or_default();
        ensure!(step, is_version(&v1), "set returned version {v1:?}");
        ensure!(
            step,
            s.value.as_deref() == Some(value1.as_str()),
            "set did not echo the value it was given"
        );
        ensure!(
            step,
            s.tags == Some(tags()),
            "set returned tags {:?}",
            s.tags
        );
        ensure!(
            step,
            s.content_type.as_deref() == Some(CONTENT_TYPE),
            "set returned contentType {:?}",
            s.content_type
        );
        let enabled = s.attributes.as_ref().and_then(|a| a.enabled);
        ensure!(
            step,
            enabled == Some(true),
            "set returned enabled={enabled:?}"
        );
        println!("rust scenario: ok   {step}");

        let step = "set-second";
        let s = sdk(
            step,
            "set_secret",
            self.set(&self.name, &value2, true).await,
        )?;
        let v2 = Self::version_of(&s).unwrap_or_default();
        ensure!(
            step,
            is_version(&v2) && v2 != v1,
            "the second set returned version {v2:?}"
        );
        ensure!(
            step,
            s.value.as_deref() == Some(value2.as_str()),
            "set did not echo the value it was given"
        );
        println!("rust scenario: ok   {step}");

        let step = "get-latest";
        let s = sdk(step, "get_secret", self.get(&self.name, None).await)?;
        ensure!(
            step,
            Self::version_of(&s).as_deref() == Some(&v2),
            "latest is not the second version"
        );
        ensure!(
            step,
            s.value.as_deref() == Some(value2.as_str()),
            "latest value is not the second value"
        );
        ensure!(step, s.tags == Some(tags()), "tags {:?}", s.tags);
        ensure!(
            step,
            s.content_type.as_deref() == Some(CONTENT_TYPE),
            "contentType {:?}",
            s.content_type
        );
        println!("rust scenario: ok   {step}");

        let step = "get-first-version";
        let s = sdk(step, "get_secret", self.get(&self.name, Some(&v1)).await)?;
        ensure!(
            step,
            Self::version_of(&s).as_deref() == Some(&v1),
            "got another version"
        );
        ensure!(
            step,
            s.value.as_deref() == Some(value1.as_str()),
            "the first version's value is not the first value"
        );
        println!("rust scenario: ok   {step}");

        let step = "list-versions";
        let options = SecretClientListSecretPropertiesVersionsOptions {
            maxresults: Some(1),
            ..Default::default()
        };
        let mut pages = sdk(
            step,
            "list_secret_properties_versions",
            self.client
                .list_secret_properties_versions(&self.name, Some(options)),
        )?
        .into_pages();
        let (mut page_count, mut versions) = (0, BTreeSet::new());
        while let Some(page) = sdk(step, "next page", pages.try_next().await)? {
            page_count += 1;
            for item in sdk(step, "page body", page.into_model())?.value {
                versions.extend(Self::version_of(&item));
            }
        }
        ensure!(
            step,
            versions.contains(&v1) && versions.contains(&v2),
            "versions listed: {versions:?}"
        );
        ensure!(
            step,
            page_count >= 2,
            "{page_count} page(s) with maxresults=1 and two versions"
        );
        println!("rust scenario: ok   {step}");

        let step = "set-fillers";
        for filler in self.fillers.clone() {
            self.to_clean.insert(filler.clone());
            sdk(
                step,
                &format!("set_secret {filler}"),
                self.set(&filler, &random_value("filler"), false).await,
            )?;
        }
        println!("rust scenario: ok   {step}");

        let step = "list-secrets";
        let options = SecretClientListSecretPropertiesOptions {
            maxresults: Some(PAGE_SIZE),
            ..Default::default()
        };
        let mut pages = sdk(
            step,
            "list_secret_properties",
            self.client.list_secret_properties(Some(options)),
        )?
        .into_pages();
        let (mut page_count, mut found) = (0, HashMap::new());
        while let Some(page) = sdk(step, "next page", pages.try_next().await)? {
            page_count += 1;
            for item in sdk(step, "page body", page.into_model())?.value {
                if let Ok(id) = item.resource_id() {
                    found.insert(id.name.clone(), (id, item));
                }
            }
        }
        let missing: Vec<_> = std::iter::once(&self.name)
            .chain(&self.fillers)
            .filter(|n| !found.contains_key(*n))
            .collect();
        ensure!(step, missing.is_empty(), "not listed: {missing:?}");
        ensure!(
            step,
            page_count >= 2,
            "only {page_count} page(s) walked with maxresults={PAGE_SIZE}"
        );
        let (id, ours) = &found[&self.name];
        ensure!(
            step,
            id.version.is_none(),
            "the list item carries version {:?}",
            id.version
        );
        ensure!(
            step,
            ours.tags == Some(tags()),
            "listed tags {:?}",
            ours.tags
        );
        ensure!(
            step,
            ours.content_type.as_deref() == Some(CONTENT_TYPE),
            "listed contentType {:?}",
            ours.content_type
        );
        println!(
            "rust scenario: ok   {step} (walked {page_count} pages, {} secrets)",
            found.len()
        );

        let step = "delete-fillers";
        for filler in &self.fillers {
            sdk(
                step,
                &format!("delete_secret {filler}"),
                self.client.delete_secret(filler, None).await,
            )?;
        }
        for filler in self.fillers.clone() {
            self.wait_deleted(step, &filler).await?;
            sdk(
                step,
                &format!("purge_deleted_secret {filler}"),
                self.client.purge_deleted_secret(&filler, None).await,
            )?;
            self.to_clean.remove(&filler);
        }
        println!("rust scenario: ok   {step}");

        let step = "disable-latest";
        let s = sdk(
            step,
            "update_secret_properties",
            self.set_enabled(&v2, false).await,
        )?;
        let enabled = s.attributes.as_ref().and_then(|a| a.enabled);
        ensure!(
            step,
            enabled == Some(false),
            "update returned enabled={enabled:?}"
        );
        ensure!(
            step,
            Self::version_of(&s).as_deref() == Some(&v2),
            "update returned another version"
        );
        ensure!(
            step,
            s.tags == Some(tags()),
            "update dropped the tags: {:?}",
            s.tags
        );
        println!("rust scenario: ok   {step}");

        let step = "get-disabled";
        let err = match self.get(&self.name, None).await {
            Ok(_) => {
                return Err(Failure {
                    step,
                    message: "get of a disabled secret succeeded".into(),
                });
            }
            Err(e) => e,
        };
        ensure!(
            step,
            status_of(&err) == Some(StatusCode::Forbidden),
            "expected 403, got: {err}"
        );
        let (_, code, _, body) = http_failure(&err, "x-ms-request-id");
        ensure!(
            step,
            code.as_deref() == Some("Forbidden"),
            "error code {code:?}, expected Forbidden"
        );
        let kv: KeyVaultError = sdk(
            step,
            "the error body is not Key Vault's error JSON",
            azure_core::json::from_json(body.as_bytes()),
        )?;
        let inner = kv.error.and_then(|e| e.inner_error).and_then(|i| i.code);
        ensure!(
            step,
            inner.as_deref() == Some("SecretDisabled"),
            "innererror code {inner:?}, expected SecretDisabled"
        );
        println!("rust scenario: ok   {step}");

        // Key Vault keeps a disabled version disabled through delete and recover (a deleted
        // disabled secret even answers 403 SecretDisabled on GET /deletedsecrets), so the
        // version is enabled again before the delete/recover part.
        let step = "enable-latest";
        let s = sdk(
            step,
            "update_secret_properties",
            self.set_enabled(&v2, true).await,
        )?;
        let enabled = s.attributes.as_ref().and_then(|a| a.enabled);
        ensure!(
            step,
            enabled == Some(true),
            "update returned enabled={enabled:?}"
        );
        println!("rust scenario: ok   {step}");

        let step = "delete";
        let d = sdk(
            step,
            "delete_secret",
            self.client.delete_secret(&self.name, None).await,
        )?;
        let d = sdk(step, "delete body", d.into_model())?;
        ensure!(
            step,
            d.recovery_id.as_deref().is_some_and(|r| !r.is_empty()),
            "delete returned no recoveryId (soft delete off?)"
        );
        ensure!(
            step,
            d.deleted_date.is_some() && d.scheduled_purge_date.is_some(),
            "delete returned no deletedDate/scheduledPurgeDate"
        );
        self.wait_deleted(step, &self.name).await?;
        println!("rust scenario: ok   {step}");

        let step = "get-deleted";
        let d = sdk(
            step,
            "get_deleted_secret",
            self.client.get_deleted_secret(&self.name, None).await,
        )?;
        let d = sdk(step, "deleted body", d.into_model())?;
        let name = d.resource_id().ok().map(|id| id.name);
        ensure!(
            step,
            name.as_deref() == Some(self.name.as_str()),
            "id names {name:?}"
        );
        ensure!(step, d.recovery_id.is_some(), "no recoveryId");
        ensure!(step, d.tags == Some(tags()), "tags {:?}", d.tags);
        println!("rust scenario: ok   {step}");

        let step = "recover";
        sdk(
            step,
            "recover_deleted_secret",
            self.client.recover_deleted_secret(&self.name, None).await,
        )?;
        // As the Python and .NET recover pollers do: the secret can answer 404 for a moment.
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            match self.get(&self.name, None).await {
                Ok(_) => break,
                Err(e) if status_of(&e) == Some(StatusCode::NotFound) => {}
                Err(e) => return sdk(step, "polling the recovered secret", Err(e)),
            }
            ensure!(
                step,
                Instant::now() < deadline,
                "not back {POLL_TIMEOUT:?} after the recover"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!("rust scenario: ok   {step}");

        let step = "get-after-recover";
        let s = sdk(step, "get_secret", self.get(&self.name, None).await)?;
        ensure!(
            step,
            Self::version_of(&s).as_deref() == Some(&v2),
            "latest is not the second version"
        );
        ensure!(
            step,
            s.value.as_deref() == Some(value2.as_str()),
            "latest value is not the second value"
        );
        let s = sdk(step, "get_secret", self.get(&self.name, Some(&v1)).await)?;
        ensure!(
            step,
            s.value.as_deref() == Some(value1.as_str()),
            "the first version's value is not the first value"
        );
        println!("rust scenario: ok   {step}");

        let step = "delete-again";
        sdk(
            step,
            "delete_secret",
            self.client.delete_secret(&self.name, None).await,
        )?;
        self.wait_deleted(step, &self.name).await?;
        println!("rust scenario: ok   {step}");

        let step = "purge";
        sdk(
            step,
            "purge_deleted_secret",
            self.client.purge_deleted_secret(&self.name, None).await,
        )?;
        self.to_clean.remove(&self.name);
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            match self.client.get_deleted_secret(&self.name, None).await {
                Err(e) if status_of(&e) == Some(StatusCode::NotFound) => break,
                last => ensure!(
                    step,
                    Instant::now() < deadline,
                    "still in deleted secrets {POLL_TIMEOUT:?} after the purge (last: {:?})",
                    last.map(|r| r.status()).map_err(|e| e.to_string())
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!("rust scenario: ok   {step}");

        let step = "token-scope";
        let scopes = self.credential.scopes.lock().expect("scopes lock").clone();
        ensure!(
            step,
            scopes == BTreeSet::from([EXPECTED_SCOPE.to_owned()]),
            "the client asked for scopes {scopes:?}"
        );
        println!("rust scenario: ok   {step}");
        Ok(())
    }

    /// Best effort after a failure: delete and purge whatever this run may have left.
    async fn clean_up(&self) {
        for name in &self.to_clean {
            if let Err(e) = self.client.delete_secret(name, None).await
                && status_of(&e).is_none()
            {
                return; // the vault is unreachable: nothing to clean
            }
        }
        for name in &self.to_clean {
            // 409 while the deletion is still in progress; anything else is final.
            for _ in 0..10 {
                match self.client.purge_deleted_secret(name, None).await {
                    Err(e) if status_of(&e) == Some(StatusCode::Conflict) => {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    _ => break,
                }
            }
        }
    }
}

#[tokio::test]
async fn the_official_rust_client_runs_the_scenario_against_the_emulator() {
    install_crypto_provider();
    let credential = Arc::new(StaticCredential::default());
    let name = unique("kvclients-rs");
    let mut scenario = Scenario {
        client: emulator_client(credential.clone()),
        credential,
        fillers: (0..FILLERS).map(|i| format!("{name}-f{i:02}")).collect(),
        name,
        to_clean: BTreeSet::new(),
    };
    println!(
        "rust scenario: secret {} (api-version {API_VERSION})",
        scenario.name
    );
    if let Err(failure) = scenario.run().await {
        scenario.clean_up().await;
        panic!(
            "rust scenario: FAILED at step {}: {}",
            failure.step, failure.message
        );
    }
}
