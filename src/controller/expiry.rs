//! Expiry seen coming: `status.expiresAt` (the earliest Key Vault `attributes.exp` among
//! the synced versions, or a certificate entry's leaf `notAfter` when earlier) and the `Expiring` condition that says when it is near, decided by
//! pure functions. The condition remembers what was announced, so the Warning Event fires
//! once when the expiry enters the window (and once when it passes), not at every refresh.

use crate::api::{EXPIRING, VaultSecret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// The default `--expiry-warning`: a week, long enough to rotate a secret through a
/// change process, short enough not to warn about every yearly secret all year.
pub const DEFAULT_WARNING: Duration = Duration::from_secs(168 * 3600);

/// Condition reasons of `Expiring` (stable strings; the True ones are also Warning Event
/// reasons).
pub mod reasons {
    /// True: the earliest expiry is within the warning window.
    pub const EXPIRING: &str = "Expiring";
    /// True: the earliest expiry has passed; the Secret holds an expired version, and a
    /// refresh that finds no newer version fails with `SecretExpired`.
    pub const EXPIRED: &str = "Expired";
    /// False: the earliest expiry is further away than the window.
    pub const NOT_EXPIRING: &str = "NotExpiring";
}

/// The earliest of the synced versions' expiries, with its Secret key.
pub fn earliest(expiries: &BTreeMap<String, Time>) -> Option<(&str, Timestamp)> {
    expiries
        .iter()
        .map(|(key, t)| (key.as_str(), t.0))
        .min_by_key(|(_, t)| *t)
}

/// What the `Expiring` condition says for an expiry `expires_at` of key `key` at `now`:
/// `(status True, reason, message)`, or `None` when no synced version expires. At or past
/// the expiry it is `Expired`; within `window` of it, `Expiring`; else `NotExpiring`.
pub fn assess(
    expires_at: Option<(&str, Timestamp)>,
    source: impl Fn(&str) -> String,
    window: Duration,
    now: Timestamp,
) -> Option<(bool, &'static str, String)> {
    let (key, at) = expires_at?;
    let window_text = humantime(window);
    let what = format!("key '{key}' ({})", source(key));
    let at_text = at.strftime("%Y-%m-%dT%H:%M:%SZ");
    Some(if at <= now {
        (
            true,
            reasons::EXPIRED,
            format!(
                "{what} expired at {at_text}: the Secret holds an expired version; set a new version (or a later expiry) in Key Vault"
            ),
        )
    } else if at <= now + window {
        (
            true,
            reasons::EXPIRING,
            format!(
                "{what} expires at {at_text}, within the {window_text} warning window: set a new version in Key Vault before then"
            ),
        )
    } else {
        (
            false,
            reasons::NOT_EXPIRING,
            format!("the earliest expiry, {what} at {at_text}, is more than {window_text} away"),
        )
    })
}

/// When the `Expiring` condition changes next by the clock alone (no refresh): at window
/// entry, then at the expiry itself; `None` once past.
pub fn next_change(
    expires_at: Option<Timestamp>,
    window: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let at = expires_at?;
    let entry = at - window;
    [entry, at]
        .into_iter()
        .find(|t| *t > now)
        .map(|t| now.duration_until(t).unsigned_abs())
}

/// Where key `key` of `vsec` comes from, for messages: `Key Vault secret 'name'`, or
/// `the certificate in Key Vault secret 'name'` for a certificate entry.
pub fn source_of(vsec: &VaultSecret, key: &str) -> String {
    vsec.spec
        .data
        .iter()
        .find(|e| e.key == key)
        .map(|e| match e.remote_ref.certificate {
            // Its expiry may be the leaf's notAfter rather than the version's exp.
            Some(_) => format!(
                "the certificate in Key Vault secret '{}'",
                e.remote_ref.name
            ),
            None => format!("Key Vault secret '{}'", e.remote_ref.name),
        })
        .unwrap_or_else(|| "a Key Vault secret".to_owned())
}

/// The `Expiring` condition, keeping `lastTransitionTime` when neither status nor reason
/// changed.
pub fn condition(
    previous: Option<&Condition>,
    (ok, reason, message): (bool, &'static str, String),
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    crate::controller::decide::condition_with_reason(
        EXPIRING, previous, ok, reason, message, generation, now,
    )
}

/// Whether moving from `previous` to `new` deserves a Warning Event: entering `Expiring`
/// or `Expired` (each once; a later expiry leaves them, and a new approach warns again).
pub fn warns(previous: Option<&Condition>, new: &Condition) -> bool {
    new.status == "True" && previous.is_none_or(|p| p.status != "True" || p.reason != new.reason)
}

/// A duration as the flags spell it: `168h`, `90m`, `45s`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const WEEK: Duration = DEFAULT_WARNING;

    #[test]
    fn the_earliest_expiry_wins() {
        let expiries: BTreeMap<String, Time> = [
            ("a".to_owned(), Time(t("2027-01-01T00:00:00Z"))),
            ("b".to_owned(), Time(t("2026-12-01T00:00:00Z"))),
        ]
        .into();
        assert_eq!(earliest(&expiries), Some(("b", t("2026-12-01T00:00:00Z"))));
        assert_eq!(earliest(&BTreeMap::new()), None);
    }

    #[test]
    fn expiring_within_the_window_expired_past_it_and_nothing_without_expiry() {
        let now = t("2026-11-29T00:00:00Z");
        let src = |_: &str| "Key Vault secret 'db'".to_owned();
        assert_eq!(assess(None, src, WEEK, now), None);
        let far = assess(Some(("k", t("2026-12-07T00:00:01Z"))), src, WEEK, now).unwrap();
        assert_eq!((far.0, far.1), (false, reasons::NOT_EXPIRING));
        // The window's edge belongs to it.
        let edge = assess(Some(("k", t("2026-12-06T00:00:00Z"))), src, WEEK, now).unwrap();
        assert_eq!((edge.0, edge.1), (true, reasons::EXPIRING));
        assert!(
            edge.2.contains("key 'k' (Key Vault secret 'db')"),
            "{}",
            edge.2
        );
        assert!(edge.2.contains("2026-12-06T00:00:00Z") && edge.2.contains("168h"));
        let past = assess(Some(("k", now)), src, WEEK, now).unwrap();
        assert_eq!((past.0, past.1), (true, reasons::EXPIRED));
    }

    #[test]
    fn the_next_change_is_window_entry_then_the_expiry() {
        let now = t("2026-11-29T00:00:00Z");
        let at = t("2026-12-08T00:00:00Z");
        assert_eq!(
            next_change(Some(at), WEEK, now),
            Some(Duration::from_secs(2 * 86400))
        );
        let inside = t("2026-12-07T00:00:00Z");
        assert_eq!(
            next_change(Some(at), WEEK, inside),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(next_change(Some(at), WEEK, at), None);
        assert_eq!(next_change(None, WEEK, now), None);
    }

    #[test]
    fn a_warning_once_per_entry() {
        let now = t("2026-11-29T00:00:00Z");
        let src = |_: &str| String::new();
        let at = t("2026-12-01T00:00:00Z");
        let expiring = condition(
            None,
            assess(Some(("k", at)), src, WEEK, now).unwrap(),
            None,
            now,
        );
        assert!(warns(None, &expiring));
        // The same state again (every refresh): no Warning, the transition time kept.
        let again = condition(
            Some(&expiring),
            assess(Some(("k", at)), src, WEEK, now + Duration::from_secs(60)).unwrap(),
            None,
            now + Duration::from_secs(60),
        );
        assert!(!warns(Some(&expiring), &again));
        assert_eq!(again.last_transition_time, expiring.last_transition_time);
        // Past the expiry: one more Warning.
        let expired = condition(
            Some(&again),
            assess(Some(("k", at)), src, WEEK, at).unwrap(),
            None,
            at,
        );
        assert!(warns(Some(&again), &expired));
        // A new version with a later expiry leaves the window; not a Warning.
        let later = t("2027-06-01T00:00:00Z");
        let fine = condition(
            Some(&expired),
            assess(Some(("k", later)), src, WEEK, at).unwrap(),
            None,
            at,
        );
        assert!(!warns(Some(&expired), &fine));
        assert!(warns(Some(&fine), &expiring));
    }
}
