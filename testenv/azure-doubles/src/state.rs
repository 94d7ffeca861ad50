//! What the admin API scripts: federated credentials, managed identities, access grants,
//! injected faults, and the request counters that tests and benchmarks read back.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Secret names are case-insensitive in Key Vault, so grants and faults compare this form.
pub fn secret_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Throttle,
    Error,
    Delay,
    Reset,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// A Key Vault secret name, or `*` for every request.
    pub secret: String,
    pub kind: FaultKind,
    /// HTTP status for `throttle` (default 429) and `error` (default 503).
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` of a `throttle` (default 1) or an `error` (default none).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// A `throttle` without any `Retry-After`, as Key Vault often answers.
    #[serde(default)]
    pub without_retry_after: bool,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// How many requests the fault applies to; absent means until `DELETE /faults`.
    #[serde(default)]
    pub count: Option<u32>,
    /// Only requests whose token was issued to this client id; absent: every caller. A
    /// whole-vault fault (`*`) scoped to one test's identity leaves tests running beside it
    /// alone.
    #[serde(default)]
    pub client_id: Option<String>,
}

impl Fault {
    fn matches(&self, secret: Option<&str>, client_id: &str) -> bool {
        (self.secret == "*" || secret.is_some_and(|s| secret_key(s) == secret_key(&self.secret)))
            && self.client_id.as_deref().is_none_or(|c| c == client_id)
    }

    /// Faults with the same scope replace each other.
    fn same_scope(&self, secret: &str, client_id: Option<&str>) -> bool {
        secret_key(&self.secret) == secret_key(secret) && self.client_id.as_deref() == client_id
    }
}

/// A fault of the Entra token endpoint for one client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFaultKind {
    /// The connection is closed unanswered, as by an endpoint that is down.
    Reset,
    /// An answer in Entra's error shape with `status` and the AADSTS `code`.
    Error,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenFault {
    pub kind: TokenFaultKind,
    /// HTTP status of an `error` (default 500).
    #[serde(default)]
    pub status: Option<u16>,
    /// The AADSTS code of an `error` (default 50000, Entra's "server error").
    #[serde(default)]
    pub code: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    All,
    Secrets(HashSet<String>),
}

impl Access {
    pub fn from_names(names: &[String]) -> Self {
        if names.iter().any(|n| n == "*") {
            Access::All
        } else {
            Access::Secrets(names.iter().map(|n| secret_key(n)).collect())
        }
    }

    /// Requests that name no secret (listing) need access to every secret.
    pub fn allows(&self, secret: Option<&str>) -> bool {
        match (self, secret) {
            (Access::All, _) => true,
            (Access::Secrets(names), Some(s)) => names.contains(&secret_key(s)),
            (Access::Secrets(_), None) => false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Vault requests reaching the gateway: method -> secret name (`-` for none) -> count.
    pub vault: BTreeMap<String, BTreeMap<String, u64>>,
    /// The subset of `vault` that carried a valid token, as Key Vault counts requests it
    /// serves: a client's first, token-less request (answered by the 401 challenge) is
    /// not among them.
    pub vault_authorized: BTreeMap<String, BTreeMap<String, u64>>,
    /// Token requests at the Entra endpoint by client id (granted or refused).
    pub token_requests: BTreeMap<String, u64>,
    /// Token requests at the managed identity endpoint by client id.
    pub managed_identity_requests: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    federated: HashMap<String, HashSet<String>>,
    managed: HashSet<String>,
    access: HashMap<String, Access>,
    faults: Vec<Fault>,
    token_faults: HashMap<String, TokenFault>,
    token_lifetimes: HashMap<String, u64>,
    stats: Stats,
}

/// Shared by every listener; each critical section is a few map operations.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind, still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_federated(&self, client_id: &str, subjects: Vec<String>) {
        self.lock()
            .federated
            .insert(client_id.to_owned(), subjects.into_iter().collect());
    }

    pub fn remove_federated(&self, client_id: &str) -> bool {
        self.lock().federated.remove(client_id).is_some()
    }

    /// `None` when the client id has no federated credential at all.
    pub fn federated_subject_allowed(&self, client_id: &str, subject: &str) -> Option<bool> {
        self.lock()
            .federated
            .get(client_id)
            .map(|subjects| subjects.contains(subject))
    }

    pub fn set_managed(&self, client_id: &str) {
        self.lock().managed.insert(client_id.to_owned());
    }

    pub fn remove_managed(&self, client_id: &str) -> bool {
        self.lock().managed.remove(client_id)
    }

    pub fn is_managed(&self, client_id: &str) -> bool {
        self.lock().managed.contains(client_id)
    }

    pub fn set_access(&self, client_id: &str, access: Access) {
        self.lock().access.insert(client_id.to_owned(), access);
    }

    pub fn remove_access(&self, client_id: &str) -> bool {
        self.lock().access.remove(client_id).is_some()
    }

    pub fn access_allows(&self, client_id: &str, secret: Option<&str>) -> bool {
        self.lock()
            .access
            .get(client_id)
            .is_some_and(|a| a.allows(secret))
    }

    /// A fault for the same secret replaces the earlier one, so parallel tests that use
    /// distinct secret names do not disturb each other.
    pub fn add_fault(&self, fault: Fault) {
        let mut inner = self.lock();
        inner
            .faults
            .retain(|f| !f.same_scope(&fault.secret, fault.client_id.as_deref()));
        inner.faults.push(fault);
    }

    /// Removes every fault, those of one secret, or of one client id, or both.
    pub fn clear_faults(&self, secret: Option<&str>, client_id: Option<&str>) {
        let mut inner = self.lock();
        inner.faults.retain(|f| {
            let secret_matches = secret.is_none_or(|s| secret_key(&f.secret) == secret_key(s));
            let client_matches = client_id.is_none_or(|c| f.client_id.as_deref() == Some(c));
            !(secret_matches && client_matches)
        });
    }

    pub fn set_token_fault(&self, client_id: &str, fault: TokenFault) {
        self.lock().token_faults.insert(client_id.to_owned(), fault);
    }

    pub fn remove_token_fault(&self, client_id: &str) -> bool {
        self.lock().token_faults.remove(client_id).is_some()
    }

    pub fn token_fault(&self, client_id: &str) -> Option<TokenFault> {
        self.lock().token_faults.get(client_id).copied()
    }

    pub fn set_token_lifetime(&self, client_id: &str, seconds: u64) {
        self.lock()
            .token_lifetimes
            .insert(client_id.to_owned(), seconds);
    }

    /// How long tokens issued to `client_id` live, in seconds.
    pub fn token_lifetime(&self, client_id: &str) -> u64 {
        self.lock()
            .token_lifetimes
            .get(client_id)
            .copied()
            .unwrap_or(crate::tokens::TOKEN_LIFETIME_SECS)
    }

    /// Takes one use of the first fault matching this request (of `client_id`'s token),
    /// dropping it when used up.
    pub fn take_fault(&self, secret: Option<&str>, client_id: &str) -> Option<Fault> {
        let mut inner = self.lock();
        let index = inner
            .faults
            .iter()
            .position(|f| f.matches(secret, client_id))?;
        let fault = inner.faults[index].clone();
        match inner.faults[index].count {
            Some(n) if n <= 1 => {
                inner.faults.remove(index);
            }
            Some(n) => inner.faults[index].count = Some(n - 1),
            None => {}
        }
        Some(fault)
    }

    pub fn count_vault(&self, method: &str, secret: Option<&str>) {
        count_request(&mut self.lock().stats.vault, method, secret);
    }

    pub fn count_vault_authorized(&self, method: &str, secret: Option<&str>) {
        count_request(&mut self.lock().stats.vault_authorized, method, secret);
    }

    pub fn count_token(&self, client_id: &str) {
        *self
            .lock()
            .stats
            .token_requests
            .entry(client_id.to_owned())
            .or_default() += 1;
    }

    pub fn count_managed(&self, client_id: &str) {
        *self
            .lock()
            .stats
            .managed_identity_requests
            .entry(client_id.to_owned())
            .or_default() += 1;
    }

    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.lock().stats).unwrap_or_default()
    }
}

fn count_request(
    counts: &mut BTreeMap<String, BTreeMap<String, u64>>,
    method: &str,
    secret: Option<&str>,
) {
    *counts
        .entry(method.to_owned())
        .or_default()
        .entry(secret.unwrap_or("-").to_owned())
        .or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(secret: &str, count: Option<u32>) -> Fault {
        Fault {
            secret: secret.into(),
            kind: FaultKind::Throttle,
            status: None,
            retry_after_seconds: None,
            without_retry_after: false,
            delay_ms: None,
            count,
            client_id: None,
        }
    }

    #[test]
    fn counted_fault_is_used_up() {
        let r = Registry::default();
        r.add_fault(fault("Db", Some(2)));
        assert!(r.take_fault(Some("other"), "c").is_none());
        assert!(r.take_fault(Some("db"), "c").is_some());
        assert!(r.take_fault(Some("DB"), "c").is_some());
        assert!(r.take_fault(Some("db"), "c").is_none());
    }

    #[test]
    fn uncounted_fault_stays_until_cleared() {
        let r = Registry::default();
        r.add_fault(fault("*", None));
        for _ in 0..5 {
            assert!(r.take_fault(None, "c").is_some());
        }
        r.clear_faults(None, None);
        assert!(r.take_fault(Some("x"), "c").is_none());
    }

    #[test]
    fn a_fault_scoped_to_a_client_id_spares_other_callers() {
        let r = Registry::default();
        r.add_fault(Fault {
            client_id: Some("mine".into()),
            ..fault("*", None)
        });
        r.add_fault(fault("db", None));
        assert!(r.take_fault(Some("x"), "theirs").is_none());
        assert!(r.take_fault(Some("x"), "mine").is_some());
        assert!(r.take_fault(Some("db"), "theirs").is_some());
        r.clear_faults(None, Some("mine"));
        assert!(r.take_fault(Some("x"), "mine").is_none());
        assert!(
            r.take_fault(Some("db"), "theirs").is_some(),
            "unscoped kept"
        );
    }

    #[test]
    fn access_by_name_is_case_insensitive_and_excludes_listing() {
        let a = Access::from_names(&["App-Db".into()]);
        assert!(a.allows(Some("app-db")));
        assert!(!a.allows(Some("other")));
        assert!(!a.allows(None));
        assert!(Access::from_names(&["*".into()]).allows(None));
    }
}
