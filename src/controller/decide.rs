//! Pure decisions of a reconcile, with no I/O: when to read Key Vault, what the Secret
//! should hold, and what the status should say.

use crate::api::{Decoding, READY, Reason};
use crate::source::{FetchedSecret, SecretBytes};
use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Kubernetes refuses Secrets over 1 MiB in total; keep a margin for metadata.
pub const MAX_SECRET_DATA_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// Refreshes are spread over up to this fraction of the interval, by object uid.
const JITTER_FRACTION: f64 = 0.1;

/// Parses `refreshInterval` (`30s`, `15m`, `1h30m`, `0s`).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut digits = String::new();
    if text.is_empty() {
        return Err("refreshInterval is empty".into());
    }
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => {
                return Err(format!(
                    "refreshInterval '{text}': unknown unit '{c}' (use s, m or h)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("refreshInterval '{text}': a number must precede '{c}'"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "refreshInterval '{text}': the number {digits} has no unit"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// A fraction in [0, 0.1) fixed by the object's uid, so objects created together do not
/// refresh together, and one object refreshes at a steady rhythm.
pub fn jitter_fraction(uid: &str) -> f64 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 / u64::MAX as f64) * JITTER_FRACTION
}

/// Why Key Vault is read in this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCause {
    /// No successful sync of this generation yet (new object, changed spec, or a failure).
    NotSynced,
    /// The Secret's data no longer matches what was written.
    Drift,
    RefreshDue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadPlan {
    Read(ReadCause),
    /// Nothing to read now; look again after this long (`None`: only on a change).
    Wait(Option<Duration>),
}

#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub synced_this_generation: bool,
    pub drift: bool,
    pub last_sync: Option<Timestamp>,
    pub interval: Duration,
    pub uid: &'a str,
    pub now: Timestamp,
    /// Every entry names a version, and that version is what was synced.
    pub all_pinned_and_synced: bool,
}

pub fn plan_read(input: &PlanInput<'_>) -> ReadPlan {
    if !input.synced_this_generation {
        return ReadPlan::Read(ReadCause::NotSynced);
    }
    if input.drift {
        return ReadPlan::Read(ReadCause::Drift);
    }
    if input.interval.is_zero() || input.all_pinned_and_synced {
        return ReadPlan::Wait(None);
    }
    let Some(last) = input.last_sync else {
        return ReadPlan::Read(ReadCause::NotSynced);
    };
    let period = input.interval.mul_f64(1.0 + jitter_fraction(input.uid));
    let elapsed = input.now.duration_since(last).unsigned_abs();
    if elapsed >= period {
        ReadPlan::Read(ReadCause::RefreshDue)
    } else {
        ReadPlan::Wait(Some(period - elapsed))
    }
}

/// Why a fetched value cannot be written; the key names which entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("key '{key}': Key Vault secret '{name}' is disabled")]
    Disabled { key: String, name: String },
    #[error("key '{key}': Key Vault secret '{name}' expired at {at}")]
    Expired {
        key: String,
        name: String,
        at: String,
    },
    #[error("key '{key}': Key Vault secret '{name}' is not valid before {at}")]
    NotYetValid {
        key: String,
        name: String,
        at: String,
    },
    #[error("key '{key}': Key Vault secret '{name}' has no property '{property}'{why}")]
    PropertyNotFound {
        key: String,
        name: String,
        property: String,
        why: String,
    },
    #[error("key '{key}': Key Vault secret '{name}' is not valid Base64: {why}")]
    DecodingFailed {
        key: String,
        name: String,
        why: String,
    },
}

impl ValueError {
    pub fn reason(&self) -> Reason {
        match self {
            ValueError::Disabled { .. } => Reason::SecretDisabled,
            // Reasons are a closed set; a secret outside its validity window, on either
            // side, is reported as expired with a message that says which side.
            ValueError::Expired { .. } | ValueError::NotYetValid { .. } => Reason::SecretExpired,
            ValueError::PropertyNotFound { .. } => Reason::PropertyNotFound,
            ValueError::DecodingFailed { .. } => Reason::DecodingFailed,
        }
    }
}

/// The bytes to write for one entry: validity checked, property extracted, decoded.
pub fn entry_value(
    key: &str,
    name: &str,
    property: Option<&str>,
    decoding: Decoding,
    fetched: &FetchedSecret,
    now: time::OffsetDateTime,
) -> Result<SecretBytes, ValueError> {
    let ctx = || (key.to_owned(), name.to_owned());
    if fetched.enabled == Some(false) {
        let (key, name) = ctx();
        return Err(ValueError::Disabled { key, name });
    }
    if let Some(exp) = fetched.expires.filter(|exp| *exp <= now) {
        let (key, name) = ctx();
        return Err(ValueError::Expired {
            key,
            name,
            at: rfc3339(exp),
        });
    }
    if let Some(nbf) = fetched.not_before.filter(|nbf| *nbf > now) {
        let (key, name) = ctx();
        return Err(ValueError::NotYetValid {
            key,
            name,
            at: rfc3339(nbf),
        });
    }
    let raw = match property.filter(|p| !p.is_empty()) {
        None => fetched.value.clone(),
        Some(property) => {
            let not_found = |why: &str| {
                let (key, name) = ctx();
                ValueError::PropertyNotFound {
                    key,
                    name,
                    property: property.to_owned(),
                    why: why.to_owned(),
                }
            };
            let parsed: serde_json::Value = serde_json::from_slice(fetched.value.expose())
                .map_err(|_| not_found(" (the value is not JSON)"))?;
            match parsed.get(property) {
                None => return Err(not_found("")),
                Some(serde_json::Value::String(s)) => SecretBytes::new(s.clone().into_bytes()),
                Some(serde_json::Value::Null) => return Err(not_found(" (it is null)")),
                Some(other) => SecretBytes::new(other.to_string().into_bytes()),
            }
        }
    };
    match decoding {
        Decoding::None => Ok(raw),
        Decoding::Base64 => {
            let text: Vec<u8> = raw
                .expose()
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map(SecretBytes::new)
                .map_err(|e| {
                    let (key, name) = ctx();
                    ValueError::DecodingFailed {
                        key,
                        name,
                        why: e.to_string(),
                    }
                })
        }
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Hash of Secret data as written: keys and values, length-prefixed so that no two
/// different maps hash alike. Hex SHA-256; reveals nothing usable about short values
/// only together with the data itself, which is in the same object.
pub fn data_hash<'a>(data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<(&str, &[u8])> = data.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (k, v) in sorted {
        hasher.update((k.len() as u64).to_be_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_be_bytes());
        hasher.update(v);
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn total_size(data: &BTreeMap<String, SecretBytes>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The `Ready` condition for this outcome, keeping `lastTransitionTime` when neither the
/// status nor the reason changed.
pub fn ready_condition(
    previous: Option<&Condition>,
    ready: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ready { "True" } else { "False" }.to_owned();
    let unchanged = previous.is_some_and(|p| p.status == status && p.reason == reason.as_str());
    Condition {
        type_: READY.to_owned(),
        status,
        reason: reason.as_str().to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: match previous {
            Some(p) if unchanged => p.last_transition_time.clone(),
            _ => Time(now),
        },
    }
}

/// A failure message without its `(request id …)` parts, which differ on every attempt.
pub fn without_request_id(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" (request id ") {
        out.push_str(&rest[..start]);
        match rest[start..].find(')') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// How long to wait before retrying a failure: the time since the condition turned
/// False, bounded, so retries slow down geometrically without per-object state.
pub fn retry_delay(
    reason: Reason,
    failing_since: Option<Timestamp>,
    now: Timestamp,
    retry_after: Option<Duration>,
) -> Duration {
    let (min, max) = if reason.is_transient() {
        (Duration::from_secs(5), Duration::from_secs(300))
    } else {
        (Duration::from_secs(30), Duration::from_secs(600))
    };
    let elapsed = failing_since
        .map(|t| now.duration_since(t).unsigned_abs())
        .unwrap_or_default();
    elapsed.clamp(min, max).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(value: &str) -> FetchedSecret {
        FetchedSecret {
            value: SecretBytes::new(value.as_bytes().to_vec()),
            version: "0".repeat(32),
            content_type: None,
            enabled: Some(true),
            not_before: None,
            expires: None,
        }
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn intervals_parse_and_refuse_garbage() {
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_interval("0s").unwrap(), Duration::ZERO);
        assert!(parse_interval("10").is_err());
        assert!(parse_interval("1d").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let a = jitter_fraction("uid-a");
        assert_eq!(a, jitter_fraction("uid-a"));
        assert_ne!(a, jitter_fraction("uid-b"));
        for uid in ["a", "b", "c", "d", "e"] {
            let j = jitter_fraction(uid);
            assert!((0.0..0.1).contains(&j), "{j}");
        }
    }

    fn input(now: Timestamp, last: Timestamp) -> PlanInput<'static> {
        PlanInput {
            synced_this_generation: true,
            drift: false,
            last_sync: Some(last),
            interval: Duration::from_secs(60),
            uid: "u",
            now,
            all_pinned_and_synced: false,
        }
    }

    #[test]
    fn read_plan_follows_generation_drift_interval_and_pins() {
        let last = Timestamp::from_second(1_000_000).unwrap();
        let soon = Timestamp::from_second(1_000_030).unwrap();
        let late = Timestamp::from_second(1_000_100).unwrap();
        assert!(
            matches!(plan_read(&input(soon, last)), ReadPlan::Wait(Some(d)) if d > Duration::from_secs(29) && d <= Duration::from_secs(36))
        );
        assert_eq!(
            plan_read(&input(late, last)),
            ReadPlan::Read(ReadCause::RefreshDue)
        );
        assert_eq!(
            plan_read(&PlanInput {
                synced_this_generation: false,
                ..input(soon, last)
            }),
            ReadPlan::Read(ReadCause::NotSynced)
        );
        assert_eq!(
            plan_read(&PlanInput {
                drift: true,
                ..input(soon, last)
            }),
            ReadPlan::Read(ReadCause::Drift)
        );
        assert_eq!(
            plan_read(&PlanInput {
                all_pinned_and_synced: true,
                ..input(late, last)
            }),
            ReadPlan::Wait(None)
        );
        assert_eq!(
            plan_read(&PlanInput {
                interval: Duration::ZERO,
                ..input(late, last)
            }),
            ReadPlan::Wait(None)
        );
        // A pinned entry whose synced version is lost to drift is still read again.
        assert_eq!(
            plan_read(&PlanInput {
                all_pinned_and_synced: true,
                drift: true,
                ..input(late, last)
            }),
            ReadPlan::Read(ReadCause::Drift)
        );
    }

    #[test]
    fn property_extraction_and_decoding() {
        let json = fetched(r#"{"user":"app","password":"s3cret","port":5432}"#);
        let v = entry_value("k", "db", Some("password"), Decoding::None, &json, now()).unwrap();
        assert_eq!(v.expose(), b"s3cret");
        let v = entry_value("k", "db", Some("port"), Decoding::None, &json, now()).unwrap();
        assert_eq!(v.expose(), b"5432");
        let e = entry_value("k", "db", Some("missing"), Decoding::None, &json, now()).unwrap_err();
        assert_eq!(e.reason(), Reason::PropertyNotFound);
        let e = entry_value(
            "k",
            "db",
            Some("x"),
            Decoding::None,
            &fetched("plain"),
            now(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        assert!(
            !e.to_string().contains("plain"),
            "no value in messages: {e}"
        );

        let v = entry_value(
            "k",
            "cert",
            None,
            Decoding::Base64,
            &fetched("aGVs\nbG8="),
            now(),
        )
        .unwrap();
        assert_eq!(v.expose(), b"hello");
        let e = entry_value(
            "k",
            "cert",
            None,
            Decoding::Base64,
            &fetched("not base64!"),
            now(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), Reason::DecodingFailed);
        assert!(
            !e.to_string().contains("not base64!"),
            "no value in messages: {e}"
        );
    }

    #[test]
    fn validity_window_and_enabled_flag() {
        let mut s = fetched("v");
        s.enabled = Some(false);
        assert_eq!(
            entry_value("k", "n", None, Decoding::None, &s, now())
                .unwrap_err()
                .reason(),
            Reason::SecretDisabled
        );
        let mut s = fetched("v");
        s.expires = Some(now() - time::Duration::hours(1));
        let e = entry_value("k", "n", None, Decoding::None, &s, now()).unwrap_err();
        assert_eq!(e.reason(), Reason::SecretExpired);
        assert!(e.to_string().contains("expired at"), "{e}");
        let mut s = fetched("v");
        s.not_before = Some(now() + time::Duration::hours(1));
        let e = entry_value("k", "n", None, Decoding::None, &s, now()).unwrap_err();
        assert_eq!(e.reason(), Reason::SecretExpired);
        assert!(e.to_string().contains("not valid before"), "{e}");
    }

    #[test]
    fn data_hash_depends_on_keys_and_values_not_order() {
        let a = data_hash([("a", b"1".as_slice()), ("b", b"2".as_slice())]);
        assert_eq!(
            a,
            data_hash([("b", b"2".as_slice()), ("a", b"1".as_slice())])
        );
        assert_ne!(
            a,
            data_hash([("a", b"1".as_slice()), ("b", b"3".as_slice())])
        );
        assert_ne!(
            data_hash([("ab", b"".as_slice())]),
            data_hash([("a", b"b".as_slice())])
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn condition_keeps_transition_time_until_status_or_reason_changes() {
        let t1 = Timestamp::from_second(1).unwrap();
        let t2 = Timestamp::from_second(2).unwrap();
        let first = ready_condition(None, false, Reason::Throttled, "m1".into(), Some(1), t1);
        let again = ready_condition(
            Some(&first),
            false,
            Reason::Throttled,
            "m2".into(),
            Some(1),
            t2,
        );
        assert_eq!(again.last_transition_time, first.last_transition_time);
        let changed = ready_condition(Some(&again), true, Reason::Synced, "ok".into(), Some(1), t2);
        assert_eq!(changed.last_transition_time, Time(t2));
    }

    #[test]
    fn request_ids_are_ignored_when_comparing_failures() {
        let a = "key 'k': throttled (request id 1); retry after 2s";
        let b = "key 'k': throttled (request id 2); retry after 2s";
        assert_eq!(without_request_id(a), without_request_id(b));
        assert_eq!(without_request_id(a), "key 'k': throttled; retry after 2s");
        assert_ne!(
            without_request_id(a),
            without_request_id("key 'j': throttled (request id 1)")
        );
    }

    #[test]
    fn retries_slow_down_and_honour_retry_after() {
        let t0 = Timestamp::from_second(1000).unwrap();
        assert_eq!(
            retry_delay(Reason::Throttled, Some(t0), t0, None),
            Duration::from_secs(5)
        );
        let later = Timestamp::from_second(1040).unwrap();
        assert_eq!(
            retry_delay(Reason::Throttled, Some(t0), later, None),
            Duration::from_secs(40)
        );
        assert_eq!(
            retry_delay(
                Reason::Throttled,
                Some(t0),
                t0,
                Some(Duration::from_secs(20))
            ),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry_delay(Reason::SecretNotFound, Some(t0), t0, None),
            Duration::from_secs(30)
        );
        let much_later = Timestamp::from_second(100_000).unwrap();
        assert_eq!(
            retry_delay(Reason::VaultUnreachable, Some(t0), much_later, None),
            Duration::from_secs(300)
        );
    }
}
