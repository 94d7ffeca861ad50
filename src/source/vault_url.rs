//! Which vaults the operator calls: a `vaultUrl` is reduced to `https://host[:port]`, and
//! only hosts on a Key Vault domain (or on a suffix the operator adds) are ever sent a
//! request, so a VaultSecret cannot point Key Vault tokens at a service inside the cluster.

use azure_core::http::Url;

/// The Key Vault DNS suffixes of the public and sovereign clouds: Azure (global)
/// `vault.azure.net`, Azure operated by 21Vianet (China) `vault.azure.cn`, Azure US
/// Government `vault.usgovcloudapi.net`, Azure Germany `vault.microsoftazure.de`. From
/// Microsoft's "Access Azure Key Vault behind a firewall" (section "Key Vault operations"),
/// <https://learn.microsoft.com/azure/key-vault/general/access-behind-firewall>, and the
/// vault endpoint per cloud in "About keys, secrets and certificates",
/// <https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-and-certificates>.
/// Private endpoints keep these names (they resolve through `privatelink.vaultcore.*`).
/// Managed HSM (`managedhsm.azure.net`) serves keys, not secrets, so it is not listed.
pub const KEY_VAULT_DNS_SUFFIXES: &[&str] = &[
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
];

/// A `vaultUrl` reduced to what identifies the vault: `https://` and the host in lowercase,
/// with its port unless it is 443, and no trailing `/`. Anything else in the URL (a path
/// other than `/`, a query, a fragment, user info) or another scheme is refused, as the
/// CRD's admission rule does; the message says why.
pub fn normalize(vault_url: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        Err(format!(
            "vaultUrl '{vault_url}' {why}; it must be https:// and a host with an optional port only, e.g. https://my-vault.vault.azure.net"
        ))
    };
    let Ok(url) = Url::parse(vault_url.trim()) else {
        return refuse("is not a URL");
    };
    if url.scheme() != "https" {
        return refuse("is not https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("has user info");
    }
    if url.path() != "/" {
        return refuse("has a path");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse("has a query or fragment");
    }
    // `Url` already lowercases the host and drops the scheme's default port (443).
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return refuse("has no host");
    };
    Ok(match url.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

/// The vaults an operator accepts: hosts on [`KEY_VAULT_DNS_SUFFIXES`] or on the extra
/// suffixes it was given (`--extra-vault-suffixes`), and the hosts whose challenge
/// resource is not verified (`--skip-challenge-verification-for`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultPolicy {
    extra_suffixes: Vec<String>,
    skip_challenge_verification_for: Vec<String>,
}

/// An entry of a flag in the form it is compared in: trimmed, lowercase, without a
/// leading `.` or a default `:443`.
fn normalize_entry(entry: &str) -> String {
    let entry = entry.trim().trim_start_matches('.').to_ascii_lowercase();
    match entry.strip_suffix(":443") {
        Some(host) => host.to_owned(),
        None => entry,
    }
}

impl VaultPolicy {
    /// `extra_suffixes`: a suffix matches a host equal to it or ending with `.` and it.
    /// `skip_challenge_verification_for`: hosts, or `host:port`, as they stand in the
    /// normalised vault URL (a port other than 443 must be given). Empty entries are
    /// ignored.
    pub fn new(extra_suffixes: &[String], skip_challenge_verification_for: &[String]) -> Self {
        let clean = |entries: &[String]| -> Vec<String> {
            entries
                .iter()
                .map(|e| normalize_entry(e))
                .filter(|e| !e.is_empty())
                .collect()
        };
        Self {
            extra_suffixes: clean(extra_suffixes),
            skip_challenge_verification_for: clean(skip_challenge_verification_for),
        }
    }

    pub fn skip_challenge_verification_for(&self) -> &[String] {
        &self.skip_challenge_verification_for
    }

    /// The normalised vault URL, or why this operator sends it no request.
    pub fn check(&self, vault_url: &str) -> Result<String, String> {
        let normalized = normalize(vault_url)?;
        let host = host_of(&normalized);
        let matches = |suffix: &str| {
            host == suffix
                || host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.'))
        };
        // The built-in suffixes need a vault name in front; the extra ones may be the host.
        let on_key_vault_domain = KEY_VAULT_DNS_SUFFIXES.iter().any(|suffix| {
            host.strip_suffix(suffix)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
        });
        if on_key_vault_domain || self.extra_suffixes.iter().any(|s| matches(s)) {
            return Ok(normalized);
        }
        let mut allowed: Vec<String> = KEY_VAULT_DNS_SUFFIXES
            .iter()
            .map(|s| format!(".{s}"))
            .collect();
        allowed.extend(self.extra_suffixes.iter().cloned());
        Err(format!(
            "vaultUrl host '{host}' is not a Key Vault host: this operator sends requests only to hosts ending with {} (extra suffixes are set with --extra-vault-suffixes)",
            allowed.join(", ")
        ))
    }

    /// Whether a normalised vault URL's challenge resource goes unverified.
    pub fn skips_challenge_verification(&self, normalized_vault_url: &str) -> bool {
        let authority = normalized_vault_url
            .strip_prefix("https://")
            .unwrap_or(normalized_vault_url);
        self.skip_challenge_verification_for
            .iter()
            .any(|h| h == authority)
    }
}

/// The host of a normalised vault URL, without its port.
fn host_of(normalized: &str) -> &str {
    let authority = normalized.strip_prefix("https://").unwrap_or(normalized);
    if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets: `[::1]:8443` is host `[::1]`.
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_host_case_default_port_and_trailing_slash() {
        for url in [
            "https://My-Vault.Vault.Azure.NET",
            "https://my-vault.vault.azure.net/",
            "https://my-vault.vault.azure.net:443",
            "HTTPS://MY-VAULT.VAULT.AZURE.NET:443/",
        ] {
            assert_eq!(
                normalize(url).as_deref(),
                Ok("https://my-vault.vault.azure.net"),
                "{url}"
            );
        }
        assert_eq!(
            normalize("https://LocalHost:8443/").as_deref(),
            Ok("https://localhost:8443")
        );
        assert_eq!(
            normalize("https://127.0.0.1:49567").as_deref(),
            Ok("https://127.0.0.1:49567")
        );
    }

    #[test]
    fn refuses_anything_beyond_scheme_host_and_port() {
        for (url, why) in [
            ("http://v.vault.azure.net", "is not https"),
            ("v.vault.azure.net", "is not a URL"),
            ("https://v.vault.azure.net/secrets", "has a path"),
            ("https://v.vault.azure.net//", "has a path"),
            ("https://v.vault.azure.net/?x=1", "has a query"),
            ("https://v.vault.azure.net?", "has a query"),
            ("https://v.vault.azure.net#f", "fragment"),
            ("https://user@v.vault.azure.net", "has user info"),
            ("https://u:p@v.vault.azure.net", "has user info"),
        ] {
            let err = normalize(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    fn policy(extra: &[&str], skip: &[&str]) -> VaultPolicy {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        VaultPolicy::new(&own(extra), &own(skip))
    }

    #[test]
    fn only_key_vault_hosts_are_accepted() {
        let p = policy(&[], &[]);
        for url in [
            "https://a.vault.azure.net",
            "https://a.vault.azure.cn",
            "https://a.vault.usgovcloudapi.net",
            "https://a.vault.microsoftazure.de",
            "https://A.Vault.Azure.Net:443/",
        ] {
            assert!(p.check(url).is_ok(), "{url}");
        }
        for url in [
            "https://kubernetes.default.svc",
            "https://10.0.0.1",
            "https://vault.azure.net",
            "https://.vault.azure.net",
            "https://evilvault.azure.net",
            "https://a.vault.azure.net.evil.example",
            "https://a.vault.azure.net.",
            "https://127.0.0.1:8443",
            "https://localhost",
        ] {
            let err = p.check(url).expect_err(url);
            assert!(
                err.contains("is not a Key Vault host") && err.contains(".vault.azure.net"),
                "{url}: {err}"
            );
        }
        let err = p.check("https://kubernetes.default.svc").unwrap_err();
        assert!(err.contains("'kubernetes.default.svc'"), "{err}");
    }

    #[test]
    fn extra_suffixes_match_the_host_itself_or_after_a_dot() {
        let p = policy(&["127.0.0.1", " LocalHost ", "", ".corp.example"], &[]);
        assert_eq!(
            p.check("https://127.0.0.1:49567").as_deref(),
            Ok("https://127.0.0.1:49567")
        );
        assert!(p.check("https://localhost:1234").is_ok());
        assert!(p.check("https://kv.corp.example").is_ok());
        assert!(p.check("https://corp.example").is_ok());
        assert!(p.check("https://notcorp.example").is_err());
        assert!(p.check("https://127.0.0.10").is_err());
        assert!(p.check("https://evil-localhost").is_err());
        let err = p.check("https://10.0.0.1").unwrap_err();
        assert!(
            err.contains("'10.0.0.1'") && err.contains("localhost") && err.contains("127.0.0.1"),
            "{err}"
        );
    }

    #[test]
    fn challenge_verification_is_skipped_only_for_listed_hosts() {
        let p = policy(
            &["127.0.0.1", "localhost"],
            &["127.0.0.1:49567", "Emu.Vault.Azure.Net:443"],
        );
        assert!(p.skips_challenge_verification("https://127.0.0.1:49567"));
        assert!(!p.skips_challenge_verification("https://127.0.0.1:49568"));
        assert!(!p.skips_challenge_verification("https://127.0.0.1"));
        assert!(!p.skips_challenge_verification("https://localhost:49567"));
        assert!(p.skips_challenge_verification("https://emu.vault.azure.net"));
        assert!(!p.skips_challenge_verification("https://other.vault.azure.net"));
        assert_eq!(
            p.skip_challenge_verification_for(),
            ["127.0.0.1:49567", "emu.vault.azure.net"]
        );
        assert!(!policy(&[], &[]).skips_challenge_verification("https://a.vault.azure.net"));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_of("https://a.vault.azure.net"), "a.vault.azure.net");
        assert_eq!(host_of("https://localhost:8443"), "localhost");
        assert_eq!(host_of("https://[::1]:8443"), "[::1]");
    }
}
