//! Pure decisions of a reconcile, with no I/O: when to read Key Vault, what the Secret
//! should hold, and what the status should say.

use crate::api::{CertificatePart, Decoding, READY, REFRESHED, Reason, VaultSecretStatus};
use crate::controller::certificate::{self, CertificateError, CertificateFormat};
use crate::source::{FetchedSecret, IdentityRef, SecretBytes};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _, alphabet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use zeroize::Zeroizing;

/// The most bytes a Secret's data may hold, counting the values only (keys, metadata and
/// the Base64 of the wire format do not count): the API server's own rule, from
/// k8s.io/kubernetes `pkg/apis/core/validation` `ValidateSecret` (`totalSize +=
/// len(value)` over `Data`, refused when `totalSize > core.MaxSecretSize`) and
/// `pkg/apis/core/types.go` (`MaxSecretSize = 1 * 1024 * 1024`).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// Refreshes are spread over up to this fraction of the interval, by what an object reads
/// ([`refresh_key`]).
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

/// The key of an object's refresh jitter: what it reads, so that objects reading the same
/// Key Vault secrets refresh at the same moment after syncing together (their identical
/// reads are then shared, [`crate::source::single_flight`]: one read per secret per wave),
/// while objects reading different secrets refresh at different moments. A key by object
/// uid spread objects over one secret across up to a tenth of the interval, past the
/// sharing window, and so cost several reads of one secret per wave.
///
/// Made of the vault (ASCII lowercase, no trailing `/`), the identity, and the sorted,
/// deduplicated set of `name` (ASCII lowercase: Key Vault names ignore case) with its
/// pinned version, if any; the order and spelling of entries and the Secret keys they
/// fill do not count. Lines are separated by `\n`, which no part can hold.
pub fn refresh_key<'a>(
    vault_url: &str,
    identity: &IdentityRef,
    reads: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> String {
    let mut names: Vec<String> = reads
        .into_iter()
        .map(|(name, version)| format!("{}/{}", name.to_ascii_lowercase(), version.unwrap_or("")))
        .collect();
    names.sort();
    names.dedup();
    let vault = vault_url.trim_end_matches('/').to_ascii_lowercase();
    format!("{vault}\n{identity}\n{}", names.join("\n"))
}

/// A fraction in [0, 0.1) fixed by `key` (an object's [`refresh_key`]): the refresh period
/// is the interval times one plus it, so objects with one key keep one rhythm and objects
/// with different keys spread over a tenth of the interval.
pub fn jitter_fraction(key: &str) -> f64 {
    let digest = Sha256::digest(key.as_bytes());
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
    /// A new value of the `vaultsync.io/refresh` annotation.
    Requested,
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
    /// The last read or write failed (`Refreshed` False): it is retried.
    pub refresh_failed: bool,
    /// The `vaultsync.io/refresh` annotation has a value not handled yet.
    pub refresh_requested: bool,
    pub last_sync: Option<Timestamp>,
    pub interval: Duration,
    /// The object's [`refresh_key`].
    pub jitter_key: &'a str,
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
    if input.refresh_requested {
        return ReadPlan::Read(ReadCause::Requested);
    }
    if input.refresh_failed {
        return ReadPlan::Read(ReadCause::RefreshDue);
    }
    if input.interval.is_zero() || input.all_pinned_and_synced {
        return ReadPlan::Wait(None);
    }
    let Some(last) = input.last_sync else {
        return ReadPlan::Read(ReadCause::NotSynced);
    };
    let period = input
        .interval
        .mul_f64(1.0 + jitter_fraction(input.jitter_key));
    let elapsed = input.now.duration_since(last).unsigned_abs();
    if elapsed >= period {
        ReadPlan::Read(ReadCause::RefreshDue)
    } else {
        ReadPlan::Wait(Some(period - elapsed))
    }
}

/// The oldest start a shared Key Vault read may have to serve a read made for `cause`
/// (`None`: any read within the sharing window, see [`crate::source::single_flight`]).
///
/// The object's own last read must never come back as a new one, and `lastSyncTime` keeps
/// only whole seconds of the reconcile that made it, which can begin a second or more
/// before its read does (an identity exchange comes first). So:
/// - a drift repair or a requested refresh (`vaultsync.io/refresh`) shares only reads that
///   start at or after `now`, the start of this reconcile: the user asked for Key Vault as
///   it is now, and the object's own earlier reads all started before;
/// - a due refresh shares reads that started after both `last_sync` plus one second and
///   half an interval ago (the object's own last read started about one interval ago);
/// - a first sync or a retry shares reads that started after `last_sync` plus one second.
pub fn shared_read_floor(
    cause: ReadCause,
    last_sync: Option<Timestamp>,
    interval: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let after_last = last_sync.map(|t| t + Duration::from_secs(1));
    match cause {
        ReadCause::Drift | ReadCause::Requested => Some(now),
        ReadCause::RefreshDue => {
            let half_ago = now.checked_sub(interval / 2).ok();
            after_last.max(half_ago)
        }
        ReadCause::NotSynced => after_last,
    }
}

/// Why a fetched value cannot be written; the key names which entry. Messages name the
/// key, the Key Vault secret, the property and dates, never any part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The version is disabled (`attributes.enabled` false).
    #[error("key '{key}': Key Vault secret '{name}' is disabled")]
    Disabled { key: String, name: String },
    /// The version's `exp` is at or before now; `at` is it in RFC 3339.
    #[error("key '{key}': Key Vault secret '{name}' expired at {at}")]
    Expired {
        key: String,
        name: String,
        at: String,
    },
    /// The version's `nbf` is still ahead; it becomes valid by itself at `not_before`.
    #[error(
        "key '{key}': Key Vault secret '{name}' is not valid before {}",
        rfc3339(*.not_before)
    )]
    NotYetValid {
        key: String,
        name: String,
        not_before: time::OffsetDateTime,
    },
    /// `property` names nothing to write; `why` says what was found instead.
    #[error("key '{key}': Key Vault secret '{name}' has no property '{property}' ({why})")]
    PropertyNotFound {
        key: String,
        name: String,
        property: String,
        why: PropertyMiss,
    },
    /// `decoding: Base64` on a value that is not Base64; `why` says where, not what.
    #[error("key '{key}': Key Vault secret '{name}' is not valid Base64: {why}")]
    DecodingFailed {
        key: String,
        name: String,
        why: Base64Error,
    },
    /// `remoteRef.certificate` on a value that is not a usable certificate of `format`.
    #[error("key '{key}': Key Vault secret '{name}' is not a usable certificate ({format}): {why}")]
    CertificateInvalid {
        key: String,
        name: String,
        format: CertificateFormat,
        why: CertificateError,
    },
}

impl ValueError {
    /// The condition reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            ValueError::Disabled { .. } => Reason::SecretDisabled,
            ValueError::Expired { .. } => Reason::SecretExpired,
            ValueError::NotYetValid { .. } => Reason::SecretNotYetValid,
            ValueError::PropertyNotFound { .. } => Reason::PropertyNotFound,
            ValueError::DecodingFailed { .. } => Reason::DecodingFailed,
            ValueError::CertificateInvalid { .. } => Reason::CertificateInvalid,
        }
    }

    /// How long until this failure passes by itself, when that time is known: for a
    /// version not valid yet, the time until its `nbf`. `None` for every other failure.
    pub fn passes_in(&self, now: time::OffsetDateTime) -> Option<Duration> {
        match self {
            ValueError::NotYetValid { not_before, .. } => {
                Duration::try_from(*not_before - now).ok()
            }
            _ => None,
        }
    }
}

/// The bytes to write for one entry: validity checked, property extracted, decoded.
///
/// Rules, in this order: a disabled version is [`ValueError::Disabled`]; `exp` at or
/// before `now` is [`ValueError::Expired`]; `nbf` after `now` is
/// [`ValueError::NotYetValid`]; then `property` (see [`extract_property`]; `None` or `""`
/// takes the whole value, byte for byte, a byte order mark included); then `decoding`
/// (see [`decode_base64`]; [`Decoding::None`] never decodes).
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
    if let Some(not_before) = fetched.not_before.filter(|nbf| *nbf > now) {
        let (key, name) = ctx();
        return Err(ValueError::NotYetValid {
            key,
            name,
            not_before,
        });
    }
    let raw = match property.filter(|p| !p.is_empty()) {
        None => fetched.value.clone(),
        Some(property) => extract_property(fetched.value.expose(), property).map_err(|why| {
            let (key, name) = ctx();
            ValueError::PropertyNotFound {
                key,
                name,
                property: property.to_owned(),
                why,
            }
        })?,
    };
    match decoding {
        Decoding::None => Ok(raw),
        Decoding::Base64 => decode_base64(raw.expose()).map_err(|why| {
            let (key, name) = ctx();
            ValueError::DecodingFailed { key, name, why }
        }),
    }
}

/// The bytes to write for a certificate entry (`remoteRef.certificate`), after
/// [`entry_value`] (validity checked; no property, no decoding, so the whole value), and
/// the leaf's `notAfter`. The format comes from the version's content type or the value
/// (see [`certificate::format_of`]); failures are [`ValueError::CertificateInvalid`].
pub fn certificate_value(
    key: &str,
    name: &str,
    part: CertificatePart,
    value: &SecretBytes,
    content_type: Option<&str>,
) -> Result<(SecretBytes, time::OffsetDateTime), ValueError> {
    let format = certificate::format_of(content_type, value.expose());
    certificate::read(value.expose(), format)
        .and_then(|bundle| Ok((bundle.part(part)?, bundle.not_after())))
        .map_err(|why| ValueError::CertificateInvalid {
            key: key.to_owned(),
            name: name.to_owned(),
            format,
            why,
        })
}

/// The UTF-8 byte order mark, which some editors put before a JSON document.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why `property` found nothing to write (the part of the message after "has no
/// property"). Says nothing about the value beyond its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PropertyMiss {
    /// The value (after one optional byte order mark) is not one JSON document.
    #[error("the value is not JSON")]
    NotJson,
    /// A top-level `property` on a JSON value that is an array, a string, a number, …
    #[error("the value is JSON but not a JSON object")]
    NotAnObject,
    /// No such key (or, for a pointer, nothing at that path).
    #[error("it is absent")]
    Absent,
    /// The key (or the pointer's target) is there with the value `null`.
    #[error("it is null")]
    Null,
    /// A property starting with `/` that is not an RFC 6901 JSON Pointer (`~` must be
    /// followed by `0` or `1`).
    #[error("not a valid JSON Pointer: '~' must be followed by '0' or '1'")]
    InvalidPointer,
}

/// Takes one field of a JSON value.
///
/// - A property not starting with `/` is one top-level key of a JSON object, dots and all
///   (`db.host` is the key `db.host`, not a path).
/// - A property starting with `/` is an RFC 6901 JSON Pointer (`~1` is `/`, `~0` is `~`,
///   array elements by decimal index without leading zeros; `-` points to nothing).
/// - A JSON string gives its unescaped text (UTF-8); any other JSON value gives its exact
///   source text, spacing and number spelling as they stand in the value.
/// - One leading UTF-8 byte order mark (EF BB BF) is skipped before parsing.
///
/// Errors: [`PropertyMiss`]; `null` counts as missing.
pub fn extract_property(value: &[u8], property: &str) -> Result<SecretBytes, PropertyMiss> {
    let json = value.strip_prefix(UTF8_BOM).unwrap_or(value);
    let text = std::str::from_utf8(json).map_err(|_| PropertyMiss::NotJson)?;
    let root: &RawValue = serde_json::from_str(text).map_err(|_| PropertyMiss::NotJson)?;
    let target = if property.starts_with('/') {
        let pointer =
            jsonptr::Pointer::parse(property).map_err(|_| PropertyMiss::InvalidPointer)?;
        let mut current = root;
        for token in pointer.tokens() {
            current = match json_kind(current) {
                JsonKind::Object => member(current, &token.decoded())?,
                JsonKind::Array => element(current, &token)?,
                _ => None,
            }
            .ok_or(PropertyMiss::Absent)?;
        }
        current
    } else {
        if json_kind(root) != JsonKind::Object {
            return Err(PropertyMiss::NotAnObject);
        }
        member(root, property)?.ok_or(PropertyMiss::Absent)?
    };
    match json_kind(target) {
        JsonKind::Null => Err(PropertyMiss::Null),
        JsonKind::String => serde_json::from_str::<String>(target.get())
            .map(SecretBytes::from_string)
            .map_err(|_| PropertyMiss::NotJson),
        _ => Ok(SecretBytes::new(target.get().as_bytes().to_vec())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Object,
    Array,
    String,
    Null,
    /// Numbers and booleans.
    Scalar,
}

/// The kind of a parsed JSON value, from its first byte (a `RawValue` starts at its value,
/// never at whitespace).
fn json_kind(raw: &RawValue) -> JsonKind {
    match raw.get().as_bytes().first() {
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b'"') => JsonKind::String,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Scalar,
    }
}

/// The member `key` of a JSON object; of duplicate keys the last counts, as in
/// `serde_json::Value`.
fn member<'a>(object: &'a RawValue, key: &str) -> Result<Option<&'a RawValue>, PropertyMiss> {
    let members: HashMap<String, &RawValue> =
        serde_json::from_str(object.get()).map_err(|_| PropertyMiss::NotJson)?;
    Ok(members.get(key).copied())
}

/// The element a pointer token names in a JSON array; `None` for `-`, a bad index or one
/// past the end.
fn element<'a>(
    array: &'a RawValue,
    token: &jsonptr::Token<'_>,
) -> Result<Option<&'a RawValue>, PropertyMiss> {
    let elements: Vec<&RawValue> =
        serde_json::from_str(array.get()).map_err(|_| PropertyMiss::NotJson)?;
    Ok(token
        .to_index()
        .ok()
        .and_then(|index| index.for_len(elements.len()).ok())
        .map(|i| elements[i]))
}

/// Why a value is not Base64. Says where, never what: no character of the value appears
/// in the message (the `base64` crate's own errors quote the offending byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// `+` or `/` and `-` or `_` in one value: neither alphabet alone decodes it.
    #[error("it mixes the standard (+/) and URL-safe (-_) alphabets")]
    MixedAlphabets,
    /// A byte outside the alphabet, or `=` where padding cannot be; `offset` counts bytes
    /// of the value as stored, whitespace included.
    #[error("invalid character at offset {offset}")]
    InvalidCharacter { offset: usize },
    /// A number of Base64 characters no encoder produces (4n+1).
    #[error("its length is impossible for Base64 (one character too many or too few)")]
    InvalidLength,
    /// The last character carries bits that no encoder sets (a truncated or altered value).
    #[error("the last character, at offset {offset}, is not a valid final Base64 character")]
    InvalidLastCharacter { offset: usize },
    /// Padding that is there but incomplete (`aGVsbA=`).
    #[error("incomplete padding ('=')")]
    InvalidPadding,
}

/// A Base64 engine for one alphabet and one padding mode; final bits must be canonical.
const fn base64_engine(
    alphabet: &alphabet::Alphabet,
    padding: DecodePaddingMode,
) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_decode_padding_mode(padding),
    )
}

/// The standard (RFC 4648 §4) and URL-safe (§5) alphabets, each padded (fully) or not at all.
const BASE64_STANDARD_PADDED: GeneralPurpose =
    base64_engine(&alphabet::STANDARD, DecodePaddingMode::RequireCanonical);
const BASE64_STANDARD_UNPADDED: GeneralPurpose =
    base64_engine(&alphabet::STANDARD, DecodePaddingMode::RequireNone);
const BASE64_URL_SAFE_PADDED: GeneralPurpose =
    base64_engine(&alphabet::URL_SAFE, DecodePaddingMode::RequireCanonical);
const BASE64_URL_SAFE_UNPADDED: GeneralPurpose =
    base64_engine(&alphabet::URL_SAFE, DecodePaddingMode::RequireNone);

/// Decodes `decoding: Base64`: the standard or the URL-safe alphabet, padded or not, with
/// ASCII whitespace (space, tab, CR, LF, form feed) ignored anywhere, so PEM-style line
/// breaks decode. Padding, when there is any, is complete (`aGVsbA==`, not `aGVsbA=`).
/// A value using characters of both alphabets is refused ([`Base64Error::MixedAlphabets`]):
/// no encoder writes that, so it points to a corrupted or concatenated value rather than
/// one to guess at. Empty (or all-whitespace) decodes to zero bytes.
pub fn decode_base64(value: &[u8]) -> Result<SecretBytes, Base64Error> {
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let standard = text.iter().any(|b| matches!(b, b'+' | b'/'));
    let url_safe = text.iter().any(|b| matches!(b, b'-' | b'_'));
    let padded = text.last() == Some(&b'=');
    let engine = match (standard, url_safe, padded) {
        (true, true, _) => return Err(Base64Error::MixedAlphabets),
        (false, true, true) => &BASE64_URL_SAFE_PADDED,
        (false, true, false) => &BASE64_URL_SAFE_UNPADDED,
        (_, false, true) => &BASE64_STANDARD_PADDED,
        (_, false, false) => &BASE64_STANDARD_UNPADDED,
    };
    // The offsets the engine reports count the text without whitespace; report them in
    // the value as stored, where a user can find them.
    let in_value = |offset: usize| {
        value
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_ascii_whitespace())
            .nth(offset)
            .map_or(offset, |(i, _)| i)
    };
    engine
        .decode(text.as_slice())
        .map(SecretBytes::new)
        .map_err(|e| match e {
            DecodeError::InvalidByte(offset, _) => Base64Error::InvalidCharacter {
                offset: in_value(offset),
            },
            DecodeError::InvalidLength(_) => Base64Error::InvalidLength,
            DecodeError::InvalidLastSymbol(offset, _) => Base64Error::InvalidLastCharacter {
                offset: in_value(offset),
            },
            DecodeError::InvalidPadding => Base64Error::InvalidPadding,
        })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The size of Secret data as the API server counts it: the values' bytes, keys not
/// included (see [`MAX_SECRET_SIZE`]).
pub fn total_size(data: &BTreeMap<String, SecretBytes>) -> usize {
    data.values().map(SecretBytes::len).sum()
}

/// Data the API server would refuse for its size; the message gives sizes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the synced values would be {size} bytes; a Kubernetes Secret holds at most {MAX_SECRET_SIZE} bytes of values"
)]
pub struct TooLarge {
    /// [`total_size`] of the data, in bytes.
    pub size: usize,
}

/// Checks, before any write, that the API server would accept this much data: at most
/// [`MAX_SECRET_SIZE`] bytes of values. Returns the size.
pub fn check_size(data: &BTreeMap<String, SecretBytes>) -> Result<usize, TooLarge> {
    let size = total_size(data);
    if size > MAX_SECRET_SIZE {
        Err(TooLarge { size })
    } else {
        Ok(size)
    }
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
    condition(READY, previous, ready, reason, message, generation, now)
}

/// A condition of type `type_`, keeping `lastTransitionTime` when neither the status nor
/// the reason changed.
pub fn condition(
    type_: &str,
    previous: Option<&Condition>,
    ok: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    condition_with_reason(
        type_,
        previous,
        ok,
        reason.as_str(),
        message,
        generation,
        now,
    )
}

/// [`condition`] for the conditions whose reasons are not [`Reason`]s (`Expiring`,
/// `RolloutRestarts`): `reason` is a CamelCase word, as Kubernetes conditions require.
pub fn condition_with_reason(
    type_: &str,
    previous: Option<&Condition>,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_owned();
    let unchanged = previous.is_some_and(|p| p.status == status && p.reason == reason);
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: match previous {
            Some(p) if unchanged => p.last_transition_time.clone(),
            _ => Time(now),
        },
    }
}

/// The value of the `vaultsync.io/refresh` annotation when it asks for a refresh not
/// handled yet (it differs from `status.lastRefreshRequest`).
pub fn unhandled_refresh<'a>(
    annotations: &'a BTreeMap<String, String>,
    status: &VaultSecretStatus,
) -> Option<&'a str> {
    annotations
        .get(crate::api::REFRESH_ANNOTATION)
        .map(String::as_str)
        .filter(|value| status.last_refresh_request.as_deref() != Some(*value))
}

/// What of a VaultSecret triggers a reconcile when it changes: its generation (the spec)
/// and its `vaultsync.io/refresh` annotation; not its status, which the operator writes
/// itself, nor other metadata. For the watch's `predicate_filter`.
pub fn reconcile_trigger(vsec: &crate::api::VaultSecret) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    vsec.metadata.generation.hash(&mut hasher);
    vsec.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::REFRESH_ANNOTATION))
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Whether `status` says Secret `target_name` was synced as of `generation`: `Ready` is
/// True for that generation and names that Secret, or it is False only because a drift
/// repair of that Secret is paused ([`repair_paused_status`]): the generation was synced,
/// and what the Secret holds now is for the drift check to say, so that the repair stays a
/// paced drift repair rather than a first sync.
pub fn synced_this_generation(
    status: &VaultSecretStatus,
    generation: Option<i64>,
    target_name: &str,
) -> bool {
    status.ready_condition().is_some_and(|c| {
        (c.status == "True" || c.reason == Reason::DriftRepairPaused.as_str())
            && c.observed_generation == generation
    }) && status.secret_name.as_deref() == Some(target_name)
}

fn synced_message(count: usize, target_name: &str) -> String {
    let keys = if count == 1 { "key" } else { "keys" };
    format!("{count} {keys} synced to Secret '{target_name}'")
}

/// The status while the repair of a drifted Secret waits for its pace
/// ([`super::backoff::RepairPace`]): the Secret does not hold the synced data, so `Ready`
/// turns False (`DriftRepairPaused`) rather than keep saying `Synced` for data it does not
/// hold. The message is the same on every pass, so that a client touching the Secret in a
/// loop costs one status write per pause, not one per touch. `Refreshed`, the versions and
/// `lastSyncTime` stay: they speak of the last Key Vault read, which this does not change.
pub fn repair_paused_status(
    previous: &VaultSecretStatus,
    target_name: &str,
    now: Timestamp,
) -> VaultSecretStatus {
    let message = format!(
        "Secret '{target_name}' was deleted or its data changed again soon after its last repair: another client keeps changing it; it is repaired after a pause that doubles from 1 s up to 60 s while this goes on"
    );
    let ready = ready_condition(
        previous.ready_condition(),
        false,
        Reason::DriftRepairPaused,
        message,
        previous.observed_generation,
        now,
    );
    VaultSecretStatus {
        conditions: replace_condition(&previous.conditions, ready),
        ..previous.clone()
    }
}

/// The status once a Secret whose repair was paused holds the synced data again without a
/// write of the operator's (the other client put it back): `Ready` True (`Synced`) again.
/// Any other status is returned as it was.
pub fn repair_unpaused_status(
    previous: &VaultSecretStatus,
    target_name: &str,
    now: Timestamp,
) -> VaultSecretStatus {
    let paused = previous
        .ready_condition()
        .is_some_and(|c| c.reason == Reason::DriftRepairPaused.as_str());
    if !paused {
        return previous.clone();
    }
    let ready = ready_condition(
        previous.ready_condition(),
        true,
        Reason::Synced,
        synced_message(previous.synced_versions.len(), target_name),
        previous.observed_generation,
        now,
    );
    VaultSecretStatus {
        conditions: replace_condition(&previous.conditions, ready),
        ..previous.clone()
    }
}

/// The status after a successful sync: `Ready` and `Refreshed` True (reason `Synced`), the
/// versions read, the time, and the refresh request handled (if any).
pub fn synced_status(
    previous: &VaultSecretStatus,
    generation: Option<i64>,
    target_name: String,
    versions: BTreeMap<String, String>,
    refresh_request: Option<String>,
    now: Timestamp,
) -> VaultSecretStatus {
    let keys = |n: usize| if n == 1 { "key" } else { "keys" };
    let count = versions.len();
    let ready = ready_condition(
        previous.ready_condition(),
        true,
        Reason::Synced,
        synced_message(count, &target_name),
        generation,
        now,
    );
    let refreshed = condition(
        REFRESHED,
        previous.refreshed_condition(),
        true,
        Reason::Synced,
        format!(
            "the last refresh read Key Vault and the Secret holds its {count} {}",
            keys(count)
        ),
        generation,
        now,
    );
    VaultSecretStatus {
        observed_generation: generation,
        conditions: with_other_conditions(vec![ready, refreshed], &previous.conditions),
        secret_name: Some(target_name),
        last_sync_time: Some(Time(now)),
        synced_versions: versions,
        last_refresh_request: refresh_request.or_else(|| previous.last_refresh_request.clone()),
        // Rollout restart bookkeeping has a step of its own (`controller::restart`).
        ..previous.clone()
    }
}

/// `first` followed by the conditions of `previous` of other types (`RolloutRestarts`,
/// ...), which a sync outcome does not decide.
fn with_other_conditions(mut first: Vec<Condition>, previous: &[Condition]) -> Vec<Condition> {
    let others: Vec<Condition> = previous
        .iter()
        .filter(|c| !first.iter().any(|f| f.type_ == c.type_))
        .cloned()
        .collect();
    first.extend(others);
    first
}

/// `conditions` with `new` in place of the condition of its type (added if absent),
/// `Ready` first.
pub fn set_condition(conditions: &[Condition], new: Condition) -> Vec<Condition> {
    replace_condition(conditions, new)
}

/// `conditions` without the condition of type `type_`.
pub fn remove_condition(conditions: &[Condition], type_: &str) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect()
}

/// The status while `spec.suspend` is true: `Ready` False (`Suspended`); the rest as it was.
pub fn suspended_status(
    previous: &VaultSecretStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> VaultSecretStatus {
    let message = "suspended: no Key Vault reads and no Secret writes until spec.suspend is false";
    let ready = ready_condition(
        previous.ready_condition(),
        false,
        Reason::Suspended,
        message.to_owned(),
        generation,
        now,
    );
    VaultSecretStatus {
        observed_generation: generation,
        conditions: replace_condition(&previous.conditions, ready),
        ..previous.clone()
    }
}

fn replace_condition(conditions: &[Condition], new: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != new.type_)
        .cloned()
        .collect();
    out.push(new);
    out.sort_by_key(|c| c.type_ != READY);
    out
}

/// What a failure does to the status.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureReport {
    pub status: VaultSecretStatus,
    /// The failure is new (another reason, or another message once per-attempt ids and
    /// times are masked): it deserves a Warning Event.
    pub warn: bool,
    /// When this same failure started, for the backoff ([`retry_delay`]).
    pub failing_since: Option<Timestamp>,
}

/// The status after a failure. `Refreshed` turns False with the reason and message.
/// `Ready` turns False too unless the Secret still holds this generation's keys
/// (`holds_generation`: a refresh failed after this generation synced), in which case it
/// stays as it was. A failure equal to the last one once per-attempt ids and times are
/// masked ([`failure_fingerprint`]) keeps the message on record, so retries of it write
/// nothing and warn once.
pub fn failed_status(
    previous: &VaultSecretStatus,
    generation: Option<i64>,
    reason: Reason,
    message: String,
    holds_generation: bool,
    refresh_request: Option<String>,
    now: Timestamp,
) -> FailureReport {
    let last = previous_failure(previous).filter(|c| c.reason == reason.as_str());
    let same = last.filter(|c| failure_fingerprint(&c.message) == failure_fingerprint(&message));
    let message = same.map_or(message, |c| c.message.clone());
    let failing_since = last.map(|c| c.last_transition_time.0);
    let refreshed = condition(
        REFRESHED,
        previous.refreshed_condition(),
        false,
        reason,
        message.clone(),
        generation,
        now,
    );
    let kept_ready = previous
        .ready_condition()
        .filter(|c| holds_generation && c.status == "True");
    let (ready, observed_generation) = match kept_ready {
        Some(ready) => (ready.clone(), previous.observed_generation),
        None => (
            ready_condition(
                previous.ready_condition(),
                false,
                reason,
                message,
                generation,
                now,
            ),
            generation,
        ),
    };
    FailureReport {
        status: VaultSecretStatus {
            observed_generation,
            conditions: with_other_conditions(vec![ready, refreshed], &previous.conditions),
            last_refresh_request: refresh_request.or_else(|| previous.last_refresh_request.clone()),
            // The last good sync stays on record, as its data stays in the Secret.
            ..previous.clone()
        },
        warn: same.is_none(),
        failing_since,
    }
}

/// The failure on record: `Refreshed` when False, else (a status written before
/// `Refreshed` existed, or a suspended object) `Ready` when False.
pub fn previous_failure(status: &VaultSecretStatus) -> Option<&Condition> {
    match status.refreshed_condition() {
        Some(refreshed) if refreshed.status == "True" => None,
        Some(refreshed) => Some(refreshed),
        None => status.ready_condition().filter(|c| c.status == "False"),
    }
}

/// A failure message with what changes on every attempt masked, for comparing failures:
/// Azure request ids (`(request id …)`), Entra's `Trace ID:`, `Correlation ID:` and
/// `Timestamp:` (and their JSON forms `"trace_id"`, `"correlation_id"`, `"timestamp"`),
/// which Entra puts in every error description. Dates elsewhere (a secret's `exp` or
/// `nbf`) stay: they say something about the secret.
pub fn failure_fingerprint(message: &str) -> String {
    static VARYING: std::sync::LazyLock<[(regex::Regex, &str); 3]> =
        std::sync::LazyLock::new(|| {
            // Constant patterns, compiled by this module's unit tests: they cannot fail here.
            let re = |pattern: &str| regex::Regex::new(pattern).expect("a valid pattern");
            [
                (
                    re(r"(?i)\btimestamp:\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.]+Z?"),
                    "Timestamp: …",
                ),
                (
                    re(r"(?i)\b(trace id|correlation id):\s*[-0-9a-f]+"),
                    "$1: …",
                ),
                (
                    re(r#"(?i)\\?"(timestamp|trace_id|correlation_id)\\?"\s*:\s*\\?"[^"\\]*\\?""#),
                    "\"$1\":\"…\"",
                ),
            ]
        });
    let mut out = without_request_id(message);
    for (pattern, replacement) in VARYING.iter() {
        out = pattern.replace_all(&out, *replacement).into_owned();
    }
    out
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

/// An API server refusal with every single-quoted fragment masked. The API server redacts
/// a Secret's values in its own field errors (`"<secret contents redacted>"`), but the
/// parser errors it appends quote the offending input, as Go's JSON decoder does
/// (`invalid character 'Z' looking for beginning of value`): part of the value. Kubernetes
/// quotes names with double quotes, so masking single quotes keeps the field path and
/// the kind of error.
pub fn redact_quoted_input(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('\'');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    // Fragments alternate quoted, unquoted; an unpaired last quote masks the rest.
    for (i, part) in rest.iter().enumerate() {
        if i % 2 == 0 {
            out.push_str("'…'");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// How long to wait before retrying a failure: the time since the condition turned
/// False, bounded, so retries slow down geometrically without per-object state.
/// `retry_after` (Key Vault's `Retry-After`) is a floor; `passes_in` (the time until a
/// secret's `nbf`, see [`ValueError::passes_in`]) is a ceiling, so a version that becomes
/// valid is synced then, not a backoff later.
pub fn retry_delay(
    transient: bool,
    failing_since: Option<Timestamp>,
    now: Timestamp,
    retry_after: Option<Duration>,
    passes_in: Option<Duration>,
) -> Duration {
    // Failures fixed outside the operator (a secret created, enabled, granted) are
    // noticed within a minute of the fix; transient ones back off further, since retrying
    // a throttled or failing vault harder keeps it failing.
    let (min, max) = if transient {
        (Duration::from_secs(5), Duration::from_secs(300))
    } else {
        (Duration::from_secs(30), Duration::from_secs(60))
    };
    let elapsed = failing_since
        .map(|t| now.duration_since(t).unsigned_abs())
        .unwrap_or_default();
    elapsed
        .clamp(min, max)
        .max(retry_after.unwrap_or_default())
        .min(passes_in.unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_refresh_or_drift_repair_never_shares_a_read_begun_before_it() {
        // lastSyncTime keeps whole seconds: a sync whose reconcile began at 100.9 s and
        // whose read began at 101.2 s is recorded as 100 s. A floor of lastSync + 1 s would
        // let that very read (started at 101.2 s) serve a refresh asked for at 101.5 s.
        let last = Timestamp::from_second(100).unwrap();
        let own_read = Timestamp::from_second(101).unwrap() + Duration::from_millis(200);
        let now = Timestamp::from_second(101).unwrap() + Duration::from_millis(500);
        let hour = Duration::from_secs(3600);
        for cause in [ReadCause::Requested, ReadCause::Drift] {
            let floor = shared_read_floor(cause, Some(last), hour, now).unwrap();
            assert!(own_read < floor, "{cause:?}: {floor}");
            assert_eq!(floor, now);
        }
    }

    #[test]
    fn a_due_refresh_shares_only_reads_from_the_last_half_interval() {
        let interval = Duration::from_secs(10);
        let last = Timestamp::from_second(100).unwrap();
        // The object's own read began late in second 100 or early in 101; the refresh is
        // due ten seconds on: reads begun before 106 s are too old for it.
        let now = Timestamp::from_second(111).unwrap();
        let floor = shared_read_floor(ReadCause::RefreshDue, Some(last), interval, now).unwrap();
        assert_eq!(floor, Timestamp::from_second(106).unwrap());
        // With an hour, the bound is the last sync's next second (a wave shares freely).
        let hour = Duration::from_secs(3600);
        let floor = shared_read_floor(ReadCause::RefreshDue, Some(last), hour, now).unwrap();
        assert_eq!(floor, Timestamp::from_second(101).unwrap());
    }

    #[test]
    fn a_first_sync_shares_any_read_and_a_retry_any_after_its_last_sync() {
        let now = Timestamp::from_second(500).unwrap();
        let interval = Duration::from_secs(3600);
        assert_eq!(
            shared_read_floor(ReadCause::NotSynced, None, interval, now),
            None
        );
        let last = Timestamp::from_second(400).unwrap();
        assert_eq!(
            shared_read_floor(ReadCause::NotSynced, Some(last), interval, now),
            Some(Timestamp::from_second(401).unwrap())
        );
    }

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
        let a = jitter_fraction("key-a");
        assert_eq!(a, jitter_fraction("key-a"));
        assert_ne!(a, jitter_fraction("key-b"));
        for key in ["a", "b", "c", "d", "e"] {
            let j = jitter_fraction(key);
            assert!((0.0..0.1).contains(&j), "{j}");
        }
    }

    #[test]
    fn refresh_key_is_what_an_object_reads() {
        let sa = IdentityRef::ServiceAccount {
            namespace: "team-a".into(),
            name: "app".into(),
        };
        let vault = "https://v.vault.azure.net";
        let key = refresh_key(vault, &sa, [("Db-Password", None), ("api-key", None)]);
        // Entry order, name case, repeats and a trailing slash on the vault do not count.
        assert_eq!(
            key,
            refresh_key(
                "https://V.vault.azure.net/",
                &sa,
                [("api-key", None), ("db-password", None), ("API-KEY", None)]
            )
        );
        // Another secret, a pinned version, another identity or vault is another key.
        let version = "0".repeat(32);
        for other in [
            refresh_key(vault, &sa, [("db-password", None)]),
            refresh_key(
                vault,
                &sa,
                [("db-password", Some(version.as_str())), ("api-key", None)],
            ),
            refresh_key(
                vault,
                &IdentityRef::Operator,
                [("db-password", None), ("api-key", None)],
            ),
            refresh_key(
                "https://w.vault.azure.net",
                &sa,
                [("db-password", None), ("api-key", None)],
            ),
        ] {
            assert_ne!(key, other);
        }
    }

    #[test]
    fn objects_over_one_secret_refresh_together_and_different_secrets_spread() {
        let vault = "https://v.vault.azure.net";
        let identity = IdentityRef::Operator;
        let last = Timestamp::from_second(1_000_000).unwrap();
        let interval = Duration::from_secs(3600);
        let due_after = |name: &str| {
            let key = refresh_key(vault, &identity, [(name, None)]);
            match plan_read(&PlanInput {
                jitter_key: &key,
                interval,
                ..input(last, last)
            }) {
                ReadPlan::Wait(Some(after)) => after,
                other => panic!("{other:?}"),
            }
        };
        // Two objects over one secret (created together, any uids): one moment.
        assert_eq!(due_after("shared"), due_after("SHARED"));
        // 100 distinct secrets: spread over the tenth of the interval, no two on one
        // second in most cases (a hash, so a collision or two is allowed).
        let mut seconds: Vec<u64> = (0..100)
            .map(|i| due_after(&format!("secret-{i}")).as_secs())
            .collect();
        assert!(
            seconds.iter().all(|s| (3600..3960).contains(s)),
            "{seconds:?}"
        );
        seconds.sort();
        seconds.dedup();
        assert!(seconds.len() > 80, "{} distinct seconds", seconds.len());
    }

    fn input(now: Timestamp, last: Timestamp) -> PlanInput<'static> {
        PlanInput {
            synced_this_generation: true,
            drift: false,
            refresh_failed: false,
            refresh_requested: false,
            last_sync: Some(last),
            interval: Duration::from_secs(60),
            jitter_key: "k",
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

    const DOC: &str = r#"{"db.host":"h","port":5432,"tls":true,"opts":{"a": 1},"nil":null,"empty":"","list":[10,{"x":"y"}],"a/b":"slash","m~n":"tilde","esc":"line\nquote\"A"}"#;

    fn property(value: &[u8], property: &str) -> Result<Vec<u8>, PropertyMiss> {
        extract_property(value, property).map(|v| v.expose().to_vec())
    }

    #[test]
    fn a_property_is_one_top_level_key_with_exact_text() {
        let doc = DOC.as_bytes();
        assert_eq!(property(doc, "db.host"), Ok(b"h".to_vec()));
        assert_eq!(property(doc, "port"), Ok(b"5432".to_vec()));
        assert_eq!(property(doc, "tls"), Ok(b"true".to_vec()));
        assert_eq!(property(doc, "opts"), Ok(br#"{"a": 1}"#.to_vec()));
        assert_eq!(property(doc, "empty"), Ok(Vec::new()));
        assert_eq!(property(doc, "list"), Ok(br#"[10,{"x":"y"}]"#.to_vec()));
        assert_eq!(property(doc, "esc"), Ok(b"line\nquote\"A".to_vec()));
        assert_eq!(property(doc, "nil"), Err(PropertyMiss::Null));
        assert_eq!(property(doc, "missing"), Err(PropertyMiss::Absent));
        // Dots are part of the key, never a path.
        assert_eq!(
            property(br#"{"db":{"host":"x"}}"#, "db.host"),
            Err(PropertyMiss::Absent)
        );
        // Number spelling and spacing around the document stay as they are.
        assert_eq!(
            property(b" \n{ \"n\" : 1.50e3 , \"s\":\"\\u00e9\" }\n", "n"),
            Ok(b"1.50e3".to_vec())
        );
        assert_eq!(
            property(br#"{"s":"\u00e9"}"#, "s"),
            Ok("é".as_bytes().to_vec())
        );
        // Of duplicate keys the last counts, as everywhere in serde_json.
        assert_eq!(property(br#"{"k":"1","k":"2"}"#, "k"), Ok(b"2".to_vec()));
    }

    #[test]
    fn a_property_needs_a_json_object() {
        assert_eq!(property(b"plain", "x"), Err(PropertyMiss::NotJson));
        assert_eq!(property(b"", "x"), Err(PropertyMiss::NotJson));
        assert_eq!(
            property(b"{\"a\":1} trailing", "a"),
            Err(PropertyMiss::NotJson)
        );
        assert_eq!(property(b"\xff{}", "a"), Err(PropertyMiss::NotJson));
        assert_eq!(property(b"[1,2]", "0"), Err(PropertyMiss::NotAnObject));
        assert_eq!(property(b"\"text\"", "a"), Err(PropertyMiss::NotAnObject));
        assert_eq!(property(b"null", "a"), Err(PropertyMiss::NotAnObject));
    }

    #[test]
    fn a_property_starting_with_a_slash_is_a_json_pointer() {
        let doc = DOC.as_bytes();
        assert_eq!(property(doc, "/opts/a"), Ok(b"1".to_vec()));
        assert_eq!(property(doc, "/opts"), Ok(br#"{"a": 1}"#.to_vec()));
        assert_eq!(property(doc, "/db.host"), Ok(b"h".to_vec()));
        assert_eq!(property(doc, "/list/0"), Ok(b"10".to_vec()));
        assert_eq!(property(doc, "/list/1/x"), Ok(b"y".to_vec()));
        assert_eq!(property(doc, "/a~1b"), Ok(b"slash".to_vec()));
        assert_eq!(property(doc, "/m~0n"), Ok(b"tilde".to_vec()));
        assert_eq!(property(doc, "/empty"), Ok(Vec::new()));
        assert_eq!(property(doc, "/nil"), Err(PropertyMiss::Null));
        assert_eq!(property(doc, "/list/2"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/list/-"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/list/01"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/list/x"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/port/0"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/opts/b"), Err(PropertyMiss::Absent));
        assert_eq!(property(doc, "/m~2n"), Err(PropertyMiss::InvalidPointer));
        // "/" is the key "" of the top-level object.
        assert_eq!(property(br#"{"":"e"}"#, "/"), Ok(b"e".to_vec()));
        // A pointer may start at an array.
        assert_eq!(property(br#"["a","b"]"#, "/1"), Ok(b"b".to_vec()));
        assert_eq!(property(b"plain", "/a"), Err(PropertyMiss::NotJson));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_for_properties_only() {
        let with_bom = b"\xEF\xBB\xBF{\"a\":\"b\"}";
        assert_eq!(property(with_bom, "a"), Ok(b"b".to_vec()));
        assert_eq!(property(with_bom, "/a"), Ok(b"b".to_vec()));
        // One mark only.
        assert_eq!(
            property(b"\xEF\xBB\xBF\xEF\xBB\xBF{}", "a"),
            Err(PropertyMiss::NotJson)
        );
        let v = entry_value(
            "k",
            "n",
            None,
            Decoding::None,
            &fetched("\u{feff}{\"a\":\"b\"}"),
            now(),
        )
        .unwrap();
        assert_eq!(v.expose(), with_bom);
        let v = entry_value(
            "k",
            "n",
            Some(""),
            Decoding::None,
            &fetched("\u{feff}x"),
            now(),
        )
        .unwrap();
        assert_eq!(
            v.expose(),
            b"\xEF\xBB\xBFx",
            "an empty property is the whole value"
        );
    }

    fn base64(value: &[u8]) -> Result<Vec<u8>, Base64Error> {
        decode_base64(value).map(|v| v.expose().to_vec())
    }

    #[test]
    fn base64_takes_both_alphabets_with_or_without_padding() {
        assert_eq!(base64(b"+/8="), Ok(vec![0xFB, 0xFF]));
        assert_eq!(base64(b"+/8"), Ok(vec![0xFB, 0xFF]));
        assert_eq!(base64(b"-_8"), Ok(vec![0xFB, 0xFF]));
        assert_eq!(base64(b"-_8="), Ok(vec![0xFB, 0xFF]));
        assert_eq!(base64(b"aGVs\nbG8="), Ok(b"hello".to_vec()));
        assert_eq!(base64(b"aGVsbG8"), Ok(b"hello".to_vec()));
        assert_eq!(base64(b"aGVsbA=="), Ok(b"hell".to_vec()));
        assert_eq!(base64(b"aGVsbA"), Ok(b"hell".to_vec()));
        assert_eq!(base64(b" aG\r\nVs\tbG8=\n"), Ok(b"hello".to_vec()));
        assert_eq!(base64(b""), Ok(Vec::new()));
        assert_eq!(base64(b"\n"), Ok(Vec::new()));
    }

    #[test]
    fn base64_refuses_everything_else_and_says_where() {
        assert_eq!(base64(b"+/-_"), Err(Base64Error::MixedAlphabets));
        assert_eq!(
            base64(b"aGVs\nbG8!"),
            Err(Base64Error::InvalidCharacter { offset: 8 })
        );
        assert_eq!(base64(b"aGVsb"), Err(Base64Error::InvalidLength));
        assert_eq!(
            base64(b"aGVsbG9="),
            Err(Base64Error::InvalidLastCharacter { offset: 6 })
        );
        assert_eq!(base64(b"aGVsbA="), Err(Base64Error::InvalidPadding));
        assert_eq!(
            base64(b"aGVsbG8=="),
            Err(Base64Error::InvalidCharacter { offset: 7 })
        );
        assert_eq!(
            base64(b"aGVs=bG8"),
            Err(Base64Error::InvalidCharacter { offset: 4 })
        );
        assert_eq!(
            base64(b"aGVs\x0bbG8="),
            Err(Base64Error::InvalidCharacter { offset: 4 }),
            "vertical tab is not ASCII whitespace"
        );
        assert_eq!(
            Base64Error::InvalidCharacter { offset: 8 }.to_string(),
            "invalid character at offset 8"
        );
    }

    #[test]
    fn decoding_none_never_decodes() {
        let v = entry_value("k", "n", None, Decoding::None, &fetched("123456"), now()).unwrap();
        assert_eq!(v.expose(), b"123456");
        let v = entry_value(
            "k",
            "n",
            None,
            Decoding::Base64,
            &fetched("MTIzNDU2"),
            now(),
        )
        .unwrap();
        assert_eq!(v.expose(), b"123456");
        // The property is taken first, then decoded.
        let json = fetched(r#"{"cert":"aGVs\nbG8="}"#);
        let v = entry_value("k", "n", Some("cert"), Decoding::Base64, &json, now()).unwrap();
        assert_eq!(v.expose(), b"hello");
    }

    #[test]
    fn entry_errors_have_exact_reasons_and_messages() {
        let json = fetched(DOC);
        let e = entry_value("k", "db", Some("nil"), Decoding::None, &json, now()).unwrap_err();
        assert_eq!(e.reason(), Reason::PropertyNotFound);
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'db' has no property 'nil' (it is null)"
        );
        let e = entry_value("k", "db", Some("gone"), Decoding::None, &json, now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'db' has no property 'gone' (it is absent)"
        );
        let e =
            entry_value("k", "db", Some("x"), Decoding::None, &fetched("[1]"), now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'db' has no property 'x' (the value is JSON but not a JSON object)"
        );
        let e = entry_value("k", "db", None, Decoding::Base64, &fetched("a!"), now()).unwrap_err();
        assert_eq!(e.reason(), Reason::DecodingFailed);
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'db' is not valid Base64: invalid character at offset 1"
        );
    }

    #[test]
    fn no_error_message_contains_the_value() {
        const MARK: &str = "M4rk3r";
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let t = now();
        let mut disabled = fetched(MARK);
        disabled.enabled = Some(false);
        let mut expired = fetched(MARK);
        expired.expires = Some(t - time::Duration::hours(1));
        let mut future = fetched(MARK);
        future.not_before = Some(t + time::Duration::hours(1));
        let marked_json = format!(r#"{{"{MARK}":"{MARK}","n":null,"s":"{MARK}!"}}"#);
        let cases = [
            (disabled, None, Decoding::None),
            (expired, None, Decoding::None),
            (future, None, Decoding::None),
            (fetched(MARK), Some("p"), Decoding::None),
            (fetched(&format!("[\"{MARK}\"]")), Some("p"), Decoding::None),
            (fetched(&marked_json), Some("n"), Decoding::None),
            (fetched(&marked_json), Some("absent"), Decoding::None),
            (fetched(&marked_json), Some("/s/0"), Decoding::None),
            (fetched(&marked_json), Some("/~x"), Decoding::None),
            (fetched(&marked_json), Some("s"), Decoding::Base64),
            (fetched(&format!("{MARK}+-")), None, Decoding::Base64),
            (fetched(&format!("{MARK}!")), None, Decoding::Base64),
            (fetched(&format!("{MARK}=")), None, Decoding::Base64),
            (fetched("TWFya2VyU"), None, Decoding::Base64),
            (fetched("TWFya2Vy=="), None, Decoding::Base64),
            (fetched("TWFya2VyZ"), None, Decoding::Base64),
        ];
        let mut seen = std::collections::HashSet::new();
        for (secret, property, decoding) in cases {
            let e = entry_value("k", "n", property, decoding, &secret, t).unwrap_err();
            seen.insert(std::mem::discriminant(&e));
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(MARK), "a value in: {shown}");
            assert!(!shown.contains("Marker"), "a decoded value in: {shown}");
        }
        // Every variant of ValueError, and of its parts, was among the cases.
        let variants = [
            ValueError::Disabled {
                key: "k".into(),
                name: "n".into(),
            },
            ValueError::Expired {
                key: "k".into(),
                name: "n".into(),
                at: String::new(),
            },
            ValueError::NotYetValid {
                key: "k".into(),
                name: "n".into(),
                not_before: at,
            },
        ];
        for v in &variants {
            assert!(seen.contains(&std::mem::discriminant(v)));
        }
        assert_eq!(seen.len(), 5);
        for why in [
            Base64Error::MixedAlphabets,
            Base64Error::InvalidCharacter { offset: 0 },
            Base64Error::InvalidLength,
            Base64Error::InvalidLastCharacter { offset: 0 },
            Base64Error::InvalidPadding,
        ] {
            assert!(!why.to_string().contains(MARK));
        }
    }

    #[test]
    fn validity_window_and_enabled_flag() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut s = fetched("v");
        s.enabled = Some(false);
        let e = entry_value("k", "n", None, Decoding::None, &s, t).unwrap_err();
        assert_eq!(e.reason(), Reason::SecretDisabled);
        assert_eq!(e.passes_in(t), None);

        let mut s = fetched("v");
        s.expires = Some(t - time::Duration::hours(1));
        let e = entry_value("k", "n", None, Decoding::None, &s, t).unwrap_err();
        assert_eq!(e.reason(), Reason::SecretExpired);
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'n' expired at 2023-11-14T21:13:20Z"
        );
        assert_eq!(e.passes_in(t), None);
        s.expires = Some(t);
        assert_eq!(
            entry_value("k", "n", None, Decoding::None, &s, t)
                .unwrap_err()
                .reason(),
            Reason::SecretExpired,
            "exp is the first instant it is no longer valid"
        );

        let mut s = fetched("v");
        s.not_before = Some(t + time::Duration::seconds(90));
        let e = entry_value("k", "n", None, Decoding::None, &s, t).unwrap_err();
        assert_eq!(e.reason(), Reason::SecretNotYetValid);
        assert_eq!(
            e.to_string(),
            "key 'k': Key Vault secret 'n' is not valid before 2023-11-14T22:14:50Z"
        );
        assert_eq!(e.passes_in(t), Some(Duration::from_secs(90)));
        s.not_before = Some(t);
        assert_eq!(
            entry_value("k", "n", None, Decoding::None, &s, t)
                .unwrap()
                .expose(),
            b"v",
            "nbf is the first instant it is valid"
        );
    }

    fn sized(sizes: &[usize]) -> BTreeMap<String, SecretBytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("key-{i}"), SecretBytes::new(vec![b'x'; *n])))
            .collect()
    }

    #[test]
    fn secret_size_counts_values_only_up_to_one_mebibyte() {
        assert_eq!(MAX_SECRET_SIZE, 1_048_576);
        let exact = sized(&[1_048_576 - 10, 10]);
        assert_eq!(total_size(&exact), 1_048_576, "keys do not count");
        assert_eq!(check_size(&exact), Ok(1_048_576));
        let over = sized(&[1_048_576 - 10, 11]);
        assert_eq!(check_size(&over), Err(TooLarge { size: 1_048_577 }));
        assert_eq!(
            TooLarge { size: 1_048_577 }.to_string(),
            "the synced values would be 1048577 bytes; a Kubernetes Secret holds at most 1048576 bytes of values"
        );
        assert_eq!(check_size(&BTreeMap::new()), Ok(0));
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
    fn entra_trace_ids_and_timestamps_are_masked_when_comparing_failures() {
        let attempt = |trace: &str, at: &str| {
            format!(
                "key 'k': identity operator identity 0b1c could not get a Key Vault token: AADSTS700016: Application with identifier '0b1c' was not found in the directory. Trace ID: {trace} Correlation ID: {trace} Timestamp: {at} {{\"timestamp\":\"{at}\",\"trace_id\":\"{trace}\"}}"
            )
        };
        let a = attempt(
            "11111111-2222-3333-4444-555555555555",
            "2026-11-29 16:15:53Z",
        );
        let b = attempt(
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "2026-11-29T16:16:03.5Z",
        );
        assert_ne!(a, b);
        assert_eq!(failure_fingerprint(&a), failure_fingerprint(&b));
        assert!(failure_fingerprint(&a).contains("AADSTS700016"));
        assert_eq!(
            failure_fingerprint("throttled (request id 1); retry after 2s"),
            failure_fingerprint("throttled (request id 2); retry after 2s")
        );
        // A secret's own dates are part of what the failure says.
        assert_ne!(
            failure_fingerprint("not valid before 2026-11-29T16:15:53Z"),
            failure_fingerprint("not valid before 2026-11-30T16:15:53Z")
        );
    }

    fn synced(generation: i64, at: Timestamp) -> VaultSecretStatus {
        let versions = BTreeMap::from([("k".to_owned(), "v1".to_owned())]);
        synced_status(
            &VaultSecretStatus::default(),
            Some(generation),
            "app".into(),
            versions,
            None,
            at,
        )
    }

    #[test]
    fn a_failed_refresh_keeps_ready_and_sets_refreshed_false() {
        let t1 = Timestamp::from_second(1).unwrap();
        let t2 = Timestamp::from_second(2).unwrap();
        let good = synced(3, t1);
        assert_eq!(good.refreshed_condition().unwrap().status, "True");
        let report = failed_status(
            &good,
            Some(3),
            Reason::Throttled,
            "throttled (request id 1)".into(),
            true,
            None,
            t2,
        );
        assert!(report.warn);
        let ready = report.status.ready_condition().unwrap();
        assert_eq!(ready, good.ready_condition().unwrap(), "Ready untouched");
        let refreshed = report.status.refreshed_condition().unwrap();
        assert_eq!(
            (refreshed.status.as_str(), refreshed.reason.as_str()),
            ("False", "Throttled")
        );
        assert_eq!(report.status.synced_versions, good.synced_versions);
        assert_eq!(report.status.last_sync_time, good.last_sync_time);

        // The same failure again, with another request id: nothing to write, no Warning.
        let again = failed_status(
            &report.status,
            Some(3),
            Reason::Throttled,
            "throttled (request id 2)".into(),
            true,
            None,
            Timestamp::from_second(9).unwrap(),
        );
        assert!(!again.warn);
        assert_eq!(again.status, report.status);
        assert_eq!(again.failing_since, Some(t2));

        // The Secret lost its data: Ready goes False too.
        let lost = failed_status(
            &good,
            Some(3),
            Reason::Throttled,
            "throttled".into(),
            false,
            None,
            t2,
        );
        let ready = lost.status.ready_condition().unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Throttled")
        );

        // A good refresh sets Refreshed True again.
        let back = synced_status(
            &report.status,
            Some(3),
            "app".into(),
            good.synced_versions.clone(),
            None,
            t2,
        );
        assert_eq!(back.refreshed_condition().unwrap().status, "True");
        assert!(previous_failure(&back).is_none());
    }

    #[test]
    fn a_paused_drift_repair_says_ready_false_and_stays_a_paced_drift_repair() {
        let t1 = Timestamp::from_second(1).unwrap();
        let t2 = Timestamp::from_second(2).unwrap();
        let t3 = Timestamp::from_second(3).unwrap();
        let good = synced(3, t1);
        let paused = repair_paused_status(&good, "app", t2);
        let ready = paused.ready_condition().unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "DriftRepairPaused")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert!(ready.message.contains("'app'"), "{}", ready.message);
        // The last Key Vault read is what it was.
        assert_eq!(paused.refreshed_condition(), good.refreshed_condition());
        assert_eq!(paused.synced_versions, good.synced_versions);
        assert_eq!(paused.last_sync_time, good.last_sync_time);
        // Touched again during the pause: the same status, so nothing to write.
        assert_eq!(repair_paused_status(&paused, "app", t3), paused);
        // Still this generation's sync: the next pass plans a drift repair (paced), not a
        // first sync (which the pace would not hold back).
        assert!(synced_this_generation(&paused, Some(3), "app"));
        assert!(!synced_this_generation(&paused, Some(4), "app"));
        let plan = plan_read(&PlanInput {
            synced_this_generation: synced_this_generation(&paused, Some(3), "app"),
            drift: true,
            refresh_failed: previous_failure(&paused).is_some(),
            refresh_requested: false,
            last_sync: paused.last_sync_time.as_ref().map(|t| t.0),
            interval: Duration::from_secs(3600),
            jitter_key: "k",
            now: t3,
            all_pinned_and_synced: false,
        });
        assert_eq!(plan, ReadPlan::Read(ReadCause::Drift));
        // A failure (other than the pause) is not taken for a synced generation.
        let failed = failed_status(
            &good,
            Some(3),
            Reason::Throttled,
            "t".into(),
            false,
            None,
            t2,
        );
        assert!(!synced_this_generation(&failed.status, Some(3), "app"));
        // Put back by the other client: Ready True again, nothing else changed.
        let back = repair_unpaused_status(&paused, "app", t3);
        let ready = back.ready_condition().unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Synced")
        );
        assert_eq!(ready.message, good.ready_condition().unwrap().message);
        assert_eq!(back.last_sync_time, good.last_sync_time);
        // Any status but a paused one is left as it is.
        assert_eq!(repair_unpaused_status(&good, "app", t3), good);
        assert_eq!(
            repair_unpaused_status(&failed.status, "app", t3),
            failed.status
        );
    }

    #[test]
    fn a_refresh_request_is_handled_once_per_value() {
        let t = Timestamp::from_second(100).unwrap();
        let mut annotations = BTreeMap::new();
        let status = synced(1, t);
        assert_eq!(unhandled_refresh(&annotations, &status), None);
        annotations.insert(crate::api::REFRESH_ANNOTATION.to_owned(), "1".to_owned());
        assert_eq!(unhandled_refresh(&annotations, &status), Some("1"));
        let handled = synced_status(
            &status,
            Some(1),
            "app".into(),
            status.synced_versions.clone(),
            Some("1".into()),
            t,
        );
        assert_eq!(unhandled_refresh(&annotations, &handled), None);
        let mut plan = input(t, t);
        assert!(matches!(plan_read(&plan), ReadPlan::Wait(Some(_))));
        plan.refresh_requested = true;
        assert_eq!(plan_read(&plan), ReadPlan::Read(ReadCause::Requested));
        plan.refresh_requested = false;
        plan.refresh_failed = true;
        assert_eq!(plan_read(&plan), ReadPlan::Read(ReadCause::RefreshDue));
    }

    #[test]
    fn retries_slow_down_and_honour_retry_after() {
        let t0 = Timestamp::from_second(1000).unwrap();
        assert_eq!(
            retry_delay(Reason::Throttled.is_transient(), Some(t0), t0, None, None),
            Duration::from_secs(5)
        );
        let later = Timestamp::from_second(1040).unwrap();
        assert_eq!(
            retry_delay(
                Reason::Throttled.is_transient(),
                Some(t0),
                later,
                None,
                None
            ),
            Duration::from_secs(40)
        );
        assert_eq!(
            retry_delay(
                Reason::Throttled.is_transient(),
                Some(t0),
                t0,
                Some(Duration::from_secs(20)),
                None
            ),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry_delay(
                Reason::SecretNotFound.is_transient(),
                Some(t0),
                t0,
                None,
                None
            ),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(
                Reason::SecretNotFound.is_transient(),
                Some(t0),
                much_later_than(t0),
                None,
                None
            ),
            Duration::from_secs(60),
            "a secret created in Key Vault is noticed within a minute"
        );
        let much_later = Timestamp::from_second(100_000).unwrap();
        assert_eq!(
            retry_delay(
                Reason::VaultUnreachable.is_transient(),
                Some(t0),
                much_later,
                None,
                None
            ),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn refusals_keep_the_field_and_lose_the_quoted_input() {
        let refused = "Secret \"dcj\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character 'Z' looking for beginning of value";
        assert_eq!(
            redact_quoted_input(refused),
            "Secret \"dcj\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character '…' looking for beginning of value"
        );
        assert_eq!(redact_quoted_input("a 'x' b 'y"), "a '…' b '…'");
        assert_eq!(redact_quoted_input("no quotes"), "no quotes");
    }

    fn much_later_than(t: Timestamp) -> Timestamp {
        Timestamp::from_second(t.as_second() + 100_000).unwrap()
    }

    #[test]
    fn a_version_not_yet_valid_is_retried_at_its_nbf_or_sooner() {
        let t0 = Timestamp::from_second(1000).unwrap();
        let nbf_in = |s| Some(Duration::from_secs(s));
        // nbf before the backoff's retry: at nbf.
        assert_eq!(
            retry_delay(
                Reason::SecretNotYetValid.is_transient(),
                Some(t0),
                t0,
                None,
                nbf_in(7)
            ),
            Duration::from_secs(7)
        );
        // nbf after it: the backoff's retry, so a changed nbf is noticed.
        assert_eq!(
            retry_delay(
                Reason::SecretNotYetValid.is_transient(),
                Some(t0),
                t0,
                None,
                nbf_in(3600)
            ),
            Duration::from_secs(30)
        );
        let much_later = Timestamp::from_second(100_000).unwrap();
        assert_eq!(
            retry_delay(
                Reason::SecretNotYetValid.is_transient(),
                Some(t0),
                much_later,
                None,
                nbf_in(3600)
            ),
            Duration::from_secs(60)
        );
    }
}
