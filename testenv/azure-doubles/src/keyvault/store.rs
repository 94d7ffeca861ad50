//! The state of one emulated vault and the rules Key Vault applies to it. Pure: no I/O
//! and no clock (every operation is handed `now_ms`, milliseconds since the Unix epoch),
//! so each rule is unit-tested here. The HTTP layer (`api.rs`) only parses and renders.
//!
//! Names are keyed by their lower-case form (README fact 8) and keep the spelling of their
//! first creation. Each name holds its versions in creation order; the last is the latest.

use super::backup;
use super::error::KvError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// README fact 5 (documented).
pub const MAX_NAME_CHARS: usize = 127;
/// README fact 6 (documented: 25k bytes).
pub const MAX_VALUE_BYTES: usize = 25_600;
/// README fact 6 (documented).
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;
/// README fact 6 (documented).
pub const MAX_TAGS: usize = 15;
/// README fact 6 (documented): for a tag's name and for its value.
pub const MAX_TAG_CHARS: usize = 256;
/// The spec's `maxresults` maximum and Key Vault's default page size.
pub const MAX_PAGE: usize = 25;

const SECS_PER_DAY: i64 = 86_400;

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Soft-delete retention, 7 to 90 days.
    pub recoverable_days: u32,
    /// How long a delete, recover or purge takes to settle (0 = at once); see `mod.rs`.
    pub settle_ms: u64,
}

impl Config {
    /// A vault with the full 90 days answers `Recoverable+Purgeable` (.NET recordings and
    /// `js/updatesecretproperties_roundtrips_contenttype.json`); one with fewer days
    /// `CustomizedRecoverable+Purgeable` (the 7-day JS and Rust vaults).
    pub fn recovery_level(&self) -> &'static str {
        if self.recoverable_days >= 90 {
            "Recoverable+Purgeable"
        } else {
            "CustomizedRecoverable+Purgeable"
        }
    }
}

/// One secret version. Holds the secret value: never log it (`Debug` leaves it out).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Version {
    /// 32 lower-case hex characters.
    pub id: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Never empty: an empty map is stored as `None` (bodies omit `tags`, never `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("nbf", &self.nbf)
            .field("exp", &self.exp)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .finish()
    }
}

/// The settable properties of a set or an update; `None` leaves a property alone (update)
/// or at its default (set: enabled, no contentType, no tags, no dates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    /// Replaces all tags when present (`recordings/net/Update_Replaces_Tags_Wholesale.json`).
    pub tags: Option<Tags>,
}

/// A secret version with the name it is filed under (first spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretView {
    pub name: String,
    pub version: Version,
}

/// A soft-deleted secret: its latest version and the deletion dates (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedView {
    pub name: String,
    pub version: Version,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// One page of a list. `next` is the key to continue after (the caller makes it opaque);
/// `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Active { recovered_at: Option<u64> },
    Deleted { deleted_at: u64 },
}

#[derive(Debug)]
struct Entry {
    name: String,
    versions: Vec<Version>,
    lifecycle: Lifecycle,
}

impl Entry {
    fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// `None` (latest) or an exact version id; anything not shaped like an id finds nothing.
    fn position(&self, version: Option<&str>) -> Option<usize> {
        match version {
            None => self.versions.len().checked_sub(1),
            Some(v) if is_version_id(v) => self.versions.iter().position(|x| x.id == v),
            Some(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct Store {
    config: Config,
    entries: BTreeMap<String, Entry>,
    /// Names purged within the last `settle_ms`, by lower-case name: restore refuses them.
    purged: BTreeMap<String, u64>,
}

/// Checks a secret name: 1 to 127 of `0-9 a-z A-Z -` (README fact 5).
pub fn validate_name(name: &str) -> Result<(), KvError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(KvError::InvalidName(name.to_owned()))
    }
}

/// 32 lower-case hex characters, the shape of every recorded version id.
pub fn is_version_id(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate_value(value: &str) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        // The wire text for this is unrecorded (README fact 6); the wording follows the
        // az CLI's "Secret is beyond the maximum permitted length of 25600 characters",
        // but the documented limit counts bytes.
        return Err(KvError::BadParameter(format!(
            "Secret is beyond the maximum permitted length of {MAX_VALUE_BYTES} bytes."
        )));
    }
    Ok(())
}

/// README fact 6 (documented limits; the wire texts are unrecorded, ours).
fn validate_properties(p: &Properties) -> Result<(), KvError> {
    if let Some(ct) = &p.content_type
        && ct.chars().count() > MAX_CONTENT_TYPE_CHARS
    {
        return Err(KvError::BadParameter(format!(
            "The content type is longer than the maximum of {MAX_CONTENT_TYPE_CHARS} characters."
        )));
    }
    if let Some(tags) = &p.tags {
        if tags.len() > MAX_TAGS {
            return Err(KvError::BadParameter(format!(
                "A secret can have at most {MAX_TAGS} tags; the request has {}.",
                tags.len()
            )));
        }
        if tags
            .iter()
            .any(|(k, v)| k.chars().count() > MAX_TAG_CHARS || v.chars().count() > MAX_TAG_CHARS)
        {
            return Err(KvError::BadParameter(format!(
                "A tag name or value is longer than the maximum of {MAX_TAG_CHARS} characters."
            )));
        }
    }
    Ok(())
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn secs(now_ms: u64) -> i64 {
    // u64 milliseconds / 1000 is below i64::MAX.
    i64::try_from(now_ms / 1000).unwrap_or(i64::MAX)
}

fn fresh_version_id(existing: &[Version]) -> String {
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string();
        if !existing.iter().any(|v| v.id == id) {
            return id;
        }
    }
}

/// Up to `max` items from `iter` (already past the skiptoken), and the key of the last
/// item kept when more follow.
fn page<T>(iter: impl Iterator<Item = (String, T)>, max: usize) -> Page<T> {
    let mut items = Vec::new();
    let mut last_key = None;
    for (k, item) in iter {
        if items.len() == max {
            return Page {
                items,
                next: last_key,
            };
        }
        items.push(item);
        last_key = Some(k);
    }
    Page { items, next: None }
}

fn after(skip: Option<&str>) -> (Bound<String>, Bound<String>) {
    match skip {
        Some(k) => (Bound::Excluded(k.to_owned()), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

impl Store {
    pub fn new(config: Config) -> Self {
        Store {
            config,
            entries: BTreeMap::new(),
            purged: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    fn settling(&self, since: u64, now: u64) -> bool {
        now < since.saturating_add(self.config.settle_ms)
    }

    fn purge_date(&self, deleted_at: u64) -> i64 {
        secs(deleted_at) + i64::from(self.config.recoverable_days) * SECS_PER_DAY
    }

    /// Drops deleted secrets whose retention ended (the service purges them itself) and
    /// purge markers that have settled.
    fn expire(&mut self, now: u64) {
        let now_s = secs(now);
        let days = i64::from(self.config.recoverable_days);
        self.entries.retain(|_, e| match e.lifecycle {
            Lifecycle::Deleted { deleted_at } => now_s < secs(deleted_at) + days * SECS_PER_DAY,
            Lifecycle::Active { .. } => true,
        });
        let settle = self.config.settle_ms;
        self.purged.retain(|_, at| now < at.saturating_add(settle));
    }

    fn active(&self, name: &str) -> Option<&Entry> {
        self.entries
            .get(&key(name))
            .filter(|e| matches!(e.lifecycle, Lifecycle::Active { .. }))
    }

    fn deleted_view(&self, e: &Entry, deleted_at: u64) -> Option<DeletedView> {
        Some(DeletedView {
            name: e.name.clone(),
            version: e.latest()?.clone(),
            deleted_date: secs(deleted_at),
            scheduled_purge_date: self.purge_date(deleted_at),
        })
    }

    /// PUT /secrets/{name}: a new version, which becomes the latest.
    pub fn set(
        &mut self,
        name: &str,
        value: String,
        props: Properties,
        now: u64,
    ) -> Result<SecretView, KvError> {
        validate_name(name)?;
        validate_value(&value)?;
        validate_properties(&props)?;
        self.expire(now);
        if let Some(e) = self.entries.get(&key(name)) {
            match e.lifecycle {
                Lifecycle::Deleted { .. } => {
                    return Err(KvError::DeletedButRecoverable(name.to_owned()));
                }
                Lifecycle::Active {
                    recovered_at: Some(at),
                } if self.settling(at, now) => {
                    return Err(KvError::BeingRecovered(name.to_owned()));
                }
                Lifecycle::Active { .. } => {}
            }
        }
        let entry = self.entries.entry(key(name)).or_insert_with(|| Entry {
            name: name.to_owned(),
            versions: Vec::new(),
            lifecycle: Lifecycle::Active { recovered_at: None },
        });
        let created = secs(now);
        let version = Version {
            id: fresh_version_id(&entry.versions),
            value,
            content_type: props.content_type,
            tags: props.tags.filter(|t| !t.is_empty()),
            enabled: props.enabled.unwrap_or(true),
            nbf: props.nbf,
            exp: props.exp,
            created,
            updated: created,
        };
        entry.versions.push(version.clone());
        Ok(SecretView {
            name: entry.name.clone(),
            version,
        })
    }

    /// GET /secrets/{name}[/{version}]. Expired and not-yet-valid versions are returned
    /// (README fact 7); a disabled one is refused.
    pub fn get(
        &mut self,
        name: &str,
        version: Option<&str>,
        now: u64,
    ) -> Result<SecretView, KvError> {
        validate_name(name)?;
        self.expire(now);
        let not_found = || {
            KvError::NotFound(match version {
                Some(v) => format!("{name}/{v}"),
                None => name.to_owned(),
            })
        };
        let entry = self.active(name).ok_or_else(not_found)?;
        // Right after a recover the secret is not readable yet
        // (`recordings/net/Recover_Returns_Secret_Back_To_Active.json`).
        if let Lifecycle::Active {
            recovered_at: Some(at),
        } = entry.lifecycle
            && self.settling(at, now)
        {
            return Err(not_found());
        }
        let v = entry
            .position(version)
            .and_then(|i| entry.versions.get(i))
            .ok_or_else(not_found)?;
        if !v.enabled {
            return Err(KvError::Disabled);
        }
        Ok(SecretView {
            name: entry.name.clone(),
            version: v.clone(),
        })
    }

    /// GET /secrets: the latest version of each active secret, by case-insensitive name.
    pub fn list(&mut self, skip: Option<&str>, max: usize, now: u64) -> Page<SecretView> {
        self.expire(now);
        page(
            self.entries
                .range(after(skip))
                .filter_map(|(k, e)| match e.lifecycle {
                    Lifecycle::Active { .. } => e.latest().map(|v| {
                        (
                            k.clone(),
                            SecretView {
                                name: e.name.clone(),
                                version: v.clone(),
                            },
                        )
                    }),
                    Lifecycle::Deleted { .. } => None,
                }),
            max,
        )
    }

    /// GET /secrets/{name}/versions, ordered by version id (both recordings that list
    /// versions). An unknown name has no versions (`net/GetSecretVersionsNonExisting.json`).
    pub fn list_versions(
        &mut self,
        name: &str,
        skip: Option<&str>,
        max: usize,
        now: u64,
    ) -> Result<(String, Page<SecretView>), KvError> {
        validate_name(name)?;
        self.expire(now);
        let Some(entry) = self.active(name) else {
            return Ok((
                name.to_owned(),
                Page {
                    items: Vec::new(),
                    next: None,
                },
            ));
        };
        let mut versions: Vec<&Version> = entry
            .versions
            .iter()
            .filter(|v| skip.is_none_or(|s| v.id.as_str() > s))
            .collect();
        versions.sort_by(|a, b| a.id.cmp(&b.id));
        let items = versions.into_iter().map(|v| {
            (
                v.id.clone(),
                SecretView {
                    name: entry.name.clone(),
                    version: v.clone(),
                },
            )
        });
        Ok((entry.name.clone(), page(items, max)))
    }

    /// PATCH /secrets/{name}/{version}: properties only, also on a disabled version.
    pub fn update(
        &mut self,
        name: &str,
        version: Option<&str>,
        props: Properties,
        now: u64,
    ) -> Result<SecretView, KvError> {
        validate_name(name)?;
        validate_properties(&props)?;
        self.expire(now);
        let not_found = || {
            KvError::NotFound(match version {
                Some(v) => format!("{name}/{v}"),
                None => name.to_owned(),
            })
        };
        let entry = self
            .entries
            .get_mut(&key(name))
            .filter(|e| matches!(e.lifecycle, Lifecycle::Active { .. }))
            .ok_or_else(not_found)?;
        let i = entry.position(version).ok_or_else(not_found)?;
        let v = entry.versions.get_mut(i).ok_or_else(not_found)?;
        if let Some(ct) = props.content_type {
            v.content_type = Some(ct);
        }
        if let Some(enabled) = props.enabled {
            v.enabled = enabled;
        }
        if let Some(nbf) = props.nbf {
            v.nbf = Some(nbf);
        }
        if let Some(exp) = props.exp {
            v.exp = Some(exp);
        }
        if let Some(tags) = props.tags {
            v.tags = Some(tags).filter(|t| !t.is_empty());
        }
        v.updated = secs(now).max(v.created);
        let version = v.clone();
        Ok(SecretView {
            name: entry.name.clone(),
            version,
        })
    }

    /// DELETE /secrets/{name}: soft delete of every version.
    pub fn delete(&mut self, name: &str, now: u64) -> Result<DeletedView, KvError> {
        validate_name(name)?;
        self.expire(now);
        let entry = self
            .entries
            .get_mut(&key(name))
            .filter(|e| matches!(e.lifecycle, Lifecycle::Active { .. }))
            .ok_or_else(|| KvError::NotFound(name.to_owned()))?;
        entry.lifecycle = Lifecycle::Deleted { deleted_at: now };
        let entry = self
            .entries
            .get(&key(name))
            .ok_or_else(|| KvError::NotFound(name.to_owned()))?;
        self.deleted_view(entry, now)
            .ok_or_else(|| KvError::NotFound(name.to_owned()))
    }

    /// GET /deletedsecrets/{name}. While a delete settles: "Deleted Secret not found";
    /// for a name that is not deleted: the generic text (`net/GetDeletedSecretNonExisting.json`);
    /// a disabled latest version: 403 (`net/Set_With_ContentType_And_Enabled_False.json`).
    pub fn get_deleted(&mut self, name: &str, now: u64) -> Result<DeletedView, KvError> {
        validate_name(name)?;
        self.expire(now);
        let not_found = || KvError::NotFound(name.to_owned());
        let entry = self.entries.get(&key(name)).ok_or_else(not_found)?;
        let Lifecycle::Deleted { deleted_at } = entry.lifecycle else {
            return Err(not_found());
        };
        if self.settling(deleted_at, now) {
            return Err(KvError::DeletedNotFound(name.to_owned()));
        }
        let view = self.deleted_view(entry, deleted_at).ok_or_else(not_found)?;
        if !view.version.enabled {
            return Err(KvError::Disabled);
        }
        Ok(view)
    }

    /// GET /deletedsecrets, by case-insensitive name; deletes still settling are not shown.
    pub fn list_deleted(&mut self, skip: Option<&str>, max: usize, now: u64) -> Page<DeletedView> {
        self.expire(now);
        page(
            self.entries
                .range(after(skip))
                .filter_map(|(k, e)| match e.lifecycle {
                    Lifecycle::Deleted { deleted_at } if !self.settling(deleted_at, now) => self
                        .deleted_view(e, deleted_at)
                        .map(|view| (k.clone(), view)),
                    _ => None,
                }),
            max,
        )
    }

    /// DELETE /deletedsecrets/{name}: purge (204). Refused while the delete settles
    /// (`rust/purge_secret.json`); a disabled secret is purged all the same.
    pub fn purge(&mut self, name: &str, now: u64) -> Result<(), KvError> {
        validate_name(name)?;
        self.expire(now);
        let k = key(name);
        let Some(Lifecycle::Deleted { deleted_at }) = self.entries.get(&k).map(|e| e.lifecycle)
        else {
            return Err(KvError::NotFound(name.to_owned()));
        };
        if self.settling(deleted_at, now) {
            return Err(KvError::BeingDeleted);
        }
        self.entries.remove(&k);
        if self.config.settle_ms > 0 {
            self.purged.insert(k, now);
        }
        Ok(())
    }

    /// POST /deletedsecrets/{name}/recover: back to active with all versions. Refused
    /// like a purge while the delete settles (unrecorded for recover; our choice).
    pub fn recover(&mut self, name: &str, now: u64) -> Result<SecretView, KvError> {
        validate_name(name)?;
        self.expire(now);
        let settle = self.config.settle_ms;
        let not_found = || KvError::NotFound(name.to_owned());
        let entry = self.entries.get_mut(&key(name)).ok_or_else(not_found)?;
        let Lifecycle::Deleted { deleted_at } = entry.lifecycle else {
            return Err(not_found());
        };
        if now < deleted_at.saturating_add(settle) {
            return Err(KvError::BeingDeleted);
        }
        entry.lifecycle = Lifecycle::Active {
            recovered_at: Some(now),
        };
        let version = entry.latest().ok_or_else(not_found)?.clone();
        Ok(SecretView {
            name: entry.name.clone(),
            version,
        })
    }

    /// POST /secrets/{name}/backup: a blob with every version (see `backup.rs`).
    pub fn backup(&mut self, name: &str, now: u64) -> Result<String, KvError> {
        validate_name(name)?;
        self.expire(now);
        let entry = self
            .active(name)
            .ok_or_else(|| KvError::NotFound(name.to_owned()))?;
        Ok(backup::encode(&entry.name, &entry.versions))
    }

    /// POST /secrets/restore: the blob's versions with their ids and dates
    /// (`js/can_restore_a_secret.json`). Refused while the name exists, active or deleted,
    /// or was purged within the settle time.
    pub fn restore(&mut self, blob: &str, now: u64) -> Result<SecretView, KvError> {
        self.expire(now);
        let payload = backup::decode(blob).map_err(KvError::MalformedBlob)?;
        let k = key(&payload.name);
        let Some(latest) = payload.versions.last().cloned() else {
            return Err(KvError::MalformedBlob(super::error::BlobFault::Corrupt));
        };
        if self.entries.contains_key(&k) || self.purged.contains_key(&k) {
            return Err(KvError::RestoreConflict {
                name: payload.name,
                version: latest.id,
            });
        }
        self.entries.insert(
            k,
            Entry {
                name: payload.name.clone(),
                versions: payload.versions,
                lifecycle: Lifecycle::Active { recovered_at: None },
            },
        );
        Ok(SecretView {
            name: payload.name,
            version: latest,
        })
    }
}

/// GET ...?outContentType= (api-version 2025-07-01 and later). Key Vault converts only
/// certificate-backed secrets (`managed: true`), and only PFX to PEM. The emulator holds
/// no certificate-backed secrets, so every secret's source format is `Unsupported`, as for
/// the plain secret with contentType `application/x-pkcs12` in
/// `js/getsecret_with_outcontenttypeeqpem_...json`. A certificate-backed PFX would be
/// converted here and returned with its PEM value.
pub fn convert(view: SecretView, out_content_type: &str) -> Result<SecretView, KvError> {
    let from = source_format(&view.version);
    let to = match out_content_type {
        "application/x-pem-file" => "PEM".to_owned(),
        "application/x-pkcs12" => "PFX".to_owned(),
        // Unrecorded: how the service names an unknown target. We echo the value.
        other => other.to_owned(),
    };
    Err(KvError::UnsupportedTransformation { from, to })
}

/// The conversion source format of a version: always `Unsupported` here (see `convert`).
fn source_format(_version: &Version) -> &'static str {
    "Unsupported"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::error::BlobFault;

    const T0: u64 = 1_781_649_300_000;

    fn store() -> Store {
        Store::new(Config {
            recoverable_days: 90,
            settle_ms: 0,
        })
    }

    fn settling_store(ms: u64) -> Store {
        Store::new(Config {
            recoverable_days: 7,
            settle_ms: ms,
        })
    }

    fn set(s: &mut Store, name: &str, value: &str) -> SecretView {
        s.set(name, value.into(), Properties::default(), T0)
            .expect("set")
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn recovery_level_follows_the_retention() {
        let mut c = Config {
            recoverable_days: 90,
            settle_ms: 0,
        };
        assert_eq!(c.recovery_level(), "Recoverable+Purgeable");
        c.recoverable_days = 7;
        assert_eq!(c.recovery_level(), "CustomizedRecoverable+Purgeable");
    }

    #[test]
    fn names_follow_the_documented_rules() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name("Db-Password-01").is_ok());
        assert!(validate_name(&"a".repeat(127)).is_ok());
        for bad in ["", "under_score", "dot.ted", "sp ace", "ümlaut", "%41"] {
            assert_eq!(
                validate_name(bad),
                Err(KvError::InvalidName(bad.to_owned()))
            );
        }
        assert!(validate_name(&"a".repeat(128)).is_err());
        let mut s = store();
        assert_eq!(
            s.set("a_b", "v".into(), Properties::default(), T0).err(),
            Some(KvError::InvalidName("a_b".into()))
        );
        assert_eq!(
            s.get("a_b", None, T0).err(),
            Some(KvError::InvalidName("a_b".into()))
        );
    }

    #[test]
    fn set_makes_fresh_versions_and_defaults() {
        let mut s = store();
        let a = set(&mut s, "db", "v1");
        let b = set(&mut s, "db", "v2");
        assert!(is_version_id(&a.version.id) && is_version_id(&b.version.id));
        assert_ne!(a.version.id, b.version.id);
        assert!(a.version.enabled);
        assert_eq!(a.version.created, (T0 / 1000) as i64);
        assert_eq!(a.version.created, a.version.updated);
        assert_eq!(
            (a.version.content_type, a.version.tags),
            (None, None),
            "unset contentType and tags stay absent"
        );
        // Latest is the newest; the older one stays readable by version
        // (net/Set_Twice_Creates_New_Version_Older_Still_Readable.json).
        assert_eq!(s.get("db", None, T0).unwrap().version.value, "v2");
        assert_eq!(
            s.get("db", Some(&a.version.id), T0).unwrap().version.value,
            "v1"
        );
    }

    #[test]
    fn set_keeps_properties_and_drops_empty_tags() {
        let mut s = store();
        let v = s
            .set(
                "x",
                "v".into(),
                Properties {
                    content_type: Some("text/plain".into()),
                    enabled: Some(false),
                    nbf: Some(1_781_524_800),
                    exp: Some(1_784_116_800),
                    tags: Some(tags(&[("k", "v")])),
                },
                T0,
            )
            .unwrap()
            .version;
        assert_eq!(v.content_type.as_deref(), Some("text/plain"));
        assert!(!v.enabled);
        assert_eq!((v.nbf, v.exp), (Some(1_781_524_800), Some(1_784_116_800)));
        assert_eq!(v.tags, Some(tags(&[("k", "v")])));
        let v = s
            .set(
                "y",
                "v".into(),
                Properties {
                    tags: Some(Tags::new()),
                    ..Default::default()
                },
                T0,
            )
            .unwrap()
            .version;
        assert_eq!(v.tags, None);
    }

    #[test]
    fn size_limits() {
        let mut s = store();
        assert!(
            s.set("v", "x".repeat(MAX_VALUE_BYTES), Properties::default(), T0)
                .is_ok()
        );
        assert!(matches!(
            s.set(
                "v",
                "x".repeat(MAX_VALUE_BYTES + 1),
                Properties::default(),
                T0
            ),
            Err(KvError::BadParameter(_))
        ));
        // Bytes, not characters: 12,801 two-byte characters are 25,602 bytes.
        assert!(matches!(
            s.set("v", "é".repeat(12_801), Properties::default(), T0),
            Err(KvError::BadParameter(_))
        ));
        let props = |ct: Option<String>, t: Option<Tags>| Properties {
            content_type: ct,
            tags: t,
            ..Default::default()
        };
        assert!(
            s.set("v", "x".into(), props(Some("c".repeat(255)), None), T0)
                .is_ok()
        );
        assert!(matches!(
            s.set("v", "x".into(), props(Some("c".repeat(256)), None), T0),
            Err(KvError::BadParameter(_))
        ));
        let many: Tags = (0..16).map(|i| (format!("t{i}"), "v".into())).collect();
        assert!(matches!(
            s.set("v", "x".into(), props(None, Some(many.clone())), T0),
            Err(KvError::BadParameter(_))
        ));
        let fifteen: Tags = many.into_iter().take(15).collect();
        assert!(
            s.set("v", "x".into(), props(None, Some(fifteen)), T0)
                .is_ok()
        );
        for t in [
            tags(&[(&"k".repeat(257), "v")]),
            tags(&[("k", &"v".repeat(257))]),
        ] {
            assert!(matches!(
                s.set("v", "x".into(), props(None, Some(t)), T0),
                Err(KvError::BadParameter(_))
            ));
        }
        let ok = tags(&[(&"k".repeat(256), &"v".repeat(256))]);
        assert!(s.set("v", "x".into(), props(None, Some(ok)), T0).is_ok());
        // The same limits hold for an update.
        assert!(matches!(
            s.update("v", None, props(Some("c".repeat(256)), None), T0),
            Err(KvError::BadParameter(_))
        ));
    }

    #[test]
    fn names_are_case_insensitive_and_keep_their_first_spelling() {
        let mut s = store();
        set(&mut s, "Db-Password", "v1");
        let again = set(&mut s, "DB-PASSWORD", "v2");
        assert_eq!(again.name, "Db-Password");
        assert_eq!(s.get("db-password", None, T0).unwrap().version.value, "v2");
        let (name, page) = s.list_versions("DB-password", None, 25, T0).unwrap();
        assert_eq!((name.as_str(), page.items.len()), ("Db-Password", 2));
        assert_eq!(s.list(None, 25, T0).items.len(), 1);
        s.delete("DB-PASSWORD", T0).unwrap();
        assert_eq!(
            s.get_deleted("db-password", T0).unwrap().name,
            "Db-Password"
        );
        s.purge("DB-Password", T0).unwrap();
    }

    #[test]
    fn get_not_found_texts() {
        let mut s = store();
        assert_eq!(
            s.get("nope", None, T0).err(),
            Some(KvError::NotFound("nope".into()))
        );
        set(&mut s, "x", "v");
        let missing = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            s.get("x", Some(missing), T0).err(),
            Some(KvError::NotFound(format!("x/{missing}")))
        );
        // Not shaped like a version id: not found as well.
        for odd in ["versionx", "0123456789ABCDEF0123456789ABCDEF"] {
            assert_eq!(
                s.get("x", Some(odd), T0).err(),
                Some(KvError::NotFound(format!("x/{odd}")))
            );
        }
    }

    #[test]
    fn disabled_is_refused_but_expired_and_future_are_returned() {
        let mut s = store();
        let off = s
            .set(
                "off",
                "v".into(),
                Properties {
                    enabled: Some(false),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        assert_eq!(s.get("off", None, T0).err(), Some(KvError::Disabled));
        assert_eq!(
            s.get("off", Some(&off.version.id), T0).err(),
            Some(KvError::Disabled)
        );
        let now_s = (T0 / 1000) as i64;
        for (nbf, exp) in [(None, Some(now_s - 10)), (Some(now_s + 3600), None)] {
            s.set(
                "dated",
                "v".into(),
                Properties {
                    nbf,
                    exp,
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
            let got = s.get("dated", None, T0).unwrap();
            assert_eq!((got.version.nbf, got.version.exp), (nbf, exp));
        }
    }

    #[test]
    fn disabled_latest_hides_even_enabled_older_versions_from_latest() {
        let mut s = store();
        let old = set(&mut s, "x", "old");
        s.set(
            "x",
            "new".into(),
            Properties {
                enabled: Some(false),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
        assert_eq!(s.get("x", None, T0).err(), Some(KvError::Disabled));
        assert!(s.get("x", Some(&old.version.id), T0).is_ok());
    }

    #[test]
    fn list_sorts_case_insensitively_pages_and_skips_deleted() {
        let mut s = store();
        for n in ["b", "A", "c", "gone"] {
            set(&mut s, n, "v");
        }
        s.delete("gone", T0).unwrap();
        let p1 = s.list(None, 2, T0);
        let names: Vec<_> = p1.items.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["A", "b"]);
        let p2 = s.list(p1.next.as_deref(), 2, T0);
        let names: Vec<_> = p2.items.iter().map(|v| v.name.as_str()).collect();
        assert_eq!((names, p2.next), (vec!["c"], None));
        // Exactly full last page: no next.
        assert_eq!(s.list(None, 3, T0).next, None);
    }

    #[test]
    fn list_shows_the_latest_version_even_disabled() {
        let mut s = store();
        set(&mut s, "x", "v");
        let latest = s
            .set(
                "x",
                "v2".into(),
                Properties {
                    enabled: Some(false),
                    content_type: Some("application/json".into()),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        let p = s.list(None, 25, T0);
        assert_eq!(p.items, vec![latest]);
    }

    #[test]
    fn versions_are_ordered_by_id_and_paged() {
        let mut s = store();
        let mut ids: Vec<String> = (0..5)
            .map(|i| set(&mut s, "x", &format!("v{i}")).version.id)
            .collect();
        ids.sort();
        let mut seen = Vec::new();
        let mut skip = None;
        loop {
            let (_, p) = s.list_versions("x", skip.as_deref(), 2, T0).unwrap();
            seen.extend(p.items.into_iter().map(|v| v.version.id));
            match p.next {
                Some(n) => skip = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let (_, p) = s.list_versions("unknown", None, 25, T0).unwrap();
        assert_eq!(
            p,
            Page {
                items: vec![],
                next: None
            }
        );
    }

    #[test]
    fn update_replaces_tags_and_moves_updated() {
        let mut s = store();
        let v = s
            .set(
                "x",
                "v".into(),
                Properties {
                    tags: Some(tags(&[("a", "1"), ("b", "2")])),
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        let later = T0 + 5_000;
        let u = s
            .update(
                "x",
                Some(&v.version.id),
                Properties {
                    tags: Some(tags(&[("c", "3")])),
                    enabled: Some(false),
                    ..Default::default()
                },
                later,
            )
            .unwrap();
        assert_eq!(u.version.tags, Some(tags(&[("c", "3")])));
        assert_eq!(u.version.content_type.as_deref(), Some("text/plain"));
        assert!(!u.version.enabled);
        assert_eq!(u.version.updated, (later / 1000) as i64);
        assert_eq!(u.version.created, v.version.created);
        assert_eq!(u.version.value, "v", "the value is untouched");
        // A disabled version can be updated (re-enabled), by latest as well.
        let u = s
            .update(
                "x",
                None,
                Properties {
                    enabled: Some(true),
                    ..Default::default()
                },
                later,
            )
            .unwrap();
        assert!(u.version.enabled);
        // Only the named version changes.
        let other = set(&mut s, "x", "w");
        s.update(
            "x",
            Some(&v.version.id),
            Properties {
                content_type: Some("c2".into()),
                ..Default::default()
            },
            later,
        )
        .unwrap();
        assert_eq!(
            s.get("x", Some(&other.version.id), T0)
                .unwrap()
                .version
                .content_type,
            None
        );
    }

    #[test]
    fn update_of_unknown_names_and_versions() {
        let mut s = store();
        assert_eq!(
            s.update("x", None, Properties::default(), T0).err(),
            Some(KvError::NotFound("x".into()))
        );
        set(&mut s, "x", "v");
        let missing = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            s.update("x", Some(missing), Properties::default(), T0)
                .err(),
            Some(KvError::NotFound(format!("x/{missing}")))
        );
    }

    #[test]
    fn delete_soft_deletes_every_version() {
        let mut s = store();
        set(&mut s, "x", "v1");
        let latest = set(&mut s, "x", "v2");
        let d = s.delete("x", T0).unwrap();
        assert_eq!(d.version, latest.version);
        assert_eq!(d.deleted_date, (T0 / 1000) as i64);
        assert_eq!(d.scheduled_purge_date - d.deleted_date, 90 * 86_400);
        assert_eq!(
            s.get("x", None, T0).err(),
            Some(KvError::NotFound("x".into()))
        );
        let (_, p) = s.list_versions("x", None, 25, T0).unwrap();
        assert!(p.items.is_empty());
        assert_eq!(s.delete("x", T0).err(), Some(KvError::NotFound("x".into())));
        assert_eq!(
            s.delete("never", T0).err(),
            Some(KvError::NotFound("never".into()))
        );
        assert_eq!(s.get_deleted("x", T0).unwrap(), d);
        assert_eq!(s.list_deleted(None, 25, T0).items, vec![d]);
    }

    #[test]
    fn deleted_name_is_reserved_until_purged() {
        let mut s = store();
        set(&mut s, "x", "v");
        s.delete("x", T0).unwrap();
        assert_eq!(
            s.set("X", "v".into(), Properties::default(), T0).err(),
            Some(KvError::DeletedButRecoverable("X".into()))
        );
        s.purge("x", T0).unwrap();
        assert!(s.set("x", "v".into(), Properties::default(), T0).is_ok());
    }

    #[test]
    fn deleted_get_texts() {
        let mut s = store();
        // Never deleted: the generic text (net/GetDeletedSecretNonExisting.json).
        assert_eq!(
            s.get_deleted("n", T0).err(),
            Some(KvError::NotFound("n".into()))
        );
        set(&mut s, "active", "v");
        assert_eq!(
            s.get_deleted("active", T0).err(),
            Some(KvError::NotFound("active".into()))
        );
        // Disabled: 403, and purge still works (net/Update_Toggles_Enabled_...json).
        s.set(
            "off",
            "v".into(),
            Properties {
                enabled: Some(false),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
        s.delete("off", T0).unwrap();
        assert_eq!(s.get_deleted("off", T0).err(), Some(KvError::Disabled));
        assert_eq!(s.purge("off", T0), Ok(()));
    }

    #[test]
    fn purge_and_recover_of_unknown_names() {
        let mut s = store();
        assert_eq!(s.purge("n", T0).err(), Some(KvError::NotFound("n".into())));
        assert_eq!(
            s.recover("n", T0).err(),
            Some(KvError::NotFound("n".into()))
        );
        set(&mut s, "a", "v");
        assert_eq!(s.purge("a", T0).err(), Some(KvError::NotFound("a".into())));
        assert_eq!(
            s.recover("a", T0).err(),
            Some(KvError::NotFound("a".into()))
        );
    }

    #[test]
    fn recover_brings_back_every_version() {
        let mut s = store();
        let v1 = set(&mut s, "x", "v1");
        let v2 = set(&mut s, "x", "v2");
        s.delete("x", T0).unwrap();
        let r = s.recover("x", T0).unwrap();
        assert_eq!(r.version, v2.version);
        assert_eq!(s.get("x", None, T0).unwrap().version.value, "v2");
        assert_eq!(
            s.get("x", Some(&v1.version.id), T0).unwrap().version.value,
            "v1"
        );
        assert_eq!(
            s.get_deleted("x", T0).err(),
            Some(KvError::NotFound("x".into()))
        );
    }

    #[test]
    fn retention_ends_in_an_automatic_purge() {
        let mut s = Store::new(Config {
            recoverable_days: 7,
            settle_ms: 0,
        });
        set(&mut s, "x", "v");
        let d = s.delete("x", T0).unwrap();
        assert_eq!(d.scheduled_purge_date - d.deleted_date, 7 * 86_400);
        let just_before = T0 + 7 * 86_400_000 - 1_000;
        assert!(s.get_deleted("x", just_before).is_ok());
        let after = T0 + 7 * 86_400_000;
        assert_eq!(
            s.get_deleted("x", after).err(),
            Some(KvError::NotFound("x".into()))
        );
        assert!(s.set("x", "v".into(), Properties::default(), after).is_ok());
    }

    #[test]
    fn settling_delete_hides_the_deleted_secret_and_refuses_purge() {
        let mut s = settling_store(2_000);
        set(&mut s, "x", "v");
        s.delete("x", T0).unwrap();
        assert_eq!(
            s.get_deleted("x", T0 + 500).err(),
            Some(KvError::DeletedNotFound("x".into()))
        );
        assert!(s.list_deleted(None, 25, T0 + 500).items.is_empty());
        assert_eq!(s.purge("x", T0 + 1_000).err(), Some(KvError::BeingDeleted));
        assert_eq!(
            s.recover("x", T0 + 1_000).err(),
            Some(KvError::BeingDeleted)
        );
        assert_eq!(
            s.set("x", "v".into(), Properties::default(), T0 + 1_000)
                .err(),
            Some(KvError::DeletedButRecoverable("x".into()))
        );
        assert!(s.get_deleted("x", T0 + 2_000).is_ok());
        assert_eq!(s.list_deleted(None, 25, T0 + 2_000).items.len(), 1);
        assert_eq!(s.purge("x", T0 + 2_000), Ok(()));
    }

    #[test]
    fn settling_recover_hides_the_secret_and_refuses_set() {
        let mut s = settling_store(2_000);
        set(&mut s, "x", "v");
        s.delete("x", T0).unwrap();
        s.recover("x", T0 + 2_000).unwrap();
        assert_eq!(
            s.get("x", None, T0 + 2_500).err(),
            Some(KvError::NotFound("x".into()))
        );
        assert_eq!(
            s.set("x", "v".into(), Properties::default(), T0 + 2_500)
                .err(),
            Some(KvError::BeingRecovered("x".into()))
        );
        assert_eq!(s.get("x", None, T0 + 4_000).unwrap().version.value, "v");
        assert!(
            s.set("x", "v2".into(), Properties::default(), T0 + 4_000)
                .is_ok()
        );
    }

    #[test]
    fn settling_purge_refuses_restore() {
        let mut s = settling_store(2_000);
        set(&mut s, "x", "v");
        let blob = s.backup("x", T0).unwrap();
        s.delete("x", T0).unwrap();
        s.purge("x", T0 + 2_000).unwrap();
        assert!(matches!(
            s.restore(&blob, T0 + 3_000),
            Err(KvError::RestoreConflict { .. })
        ));
        assert!(s.restore(&blob, T0 + 4_000).is_ok());
    }

    #[test]
    fn backup_and_restore_keep_ids_dates_and_order() {
        let mut s = store();
        let v1 = s
            .set(
                "Db",
                "one".into(),
                Properties {
                    tags: Some(tags(&[("k", "v")])),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        let v2 = s
            .set("Db", "two".into(), Properties::default(), T0 + 3_000)
            .unwrap();
        let blob = s.backup("db", T0).unwrap();
        assert_eq!(
            s.backup("nope", T0).err(),
            Some(KvError::NotFound("nope".into()))
        );
        // The name exists (active, then deleted): conflict naming the latest version id.
        let conflict = Some(KvError::RestoreConflict {
            name: "Db".into(),
            version: v2.version.id.clone(),
        });
        assert_eq!(s.restore(&blob, T0).err(), conflict);
        s.delete("Db", T0).unwrap();
        assert_eq!(s.restore(&blob, T0).err(), conflict);
        s.purge("Db", T0).unwrap();
        let r = s.restore(&blob, T0 + 60_000).unwrap();
        assert_eq!(r, v2);
        assert_eq!(s.get("db", None, T0).unwrap(), v2);
        assert_eq!(s.get("db", Some(&v1.version.id), T0).unwrap(), v1);
        // A restored secret gets new versions as usual.
        assert!(
            s.set("db", "three".into(), Properties::default(), T0)
                .is_ok()
        );
    }

    #[test]
    fn restore_refuses_malformed_blobs() {
        let mut s = store();
        assert_eq!(
            s.restore("bm9uLWV4aXN0aW5n", T0).err(),
            Some(KvError::MalformedBlob(BlobFault::Corrupt))
        );
        assert_eq!(
            s.restore(&"A".repeat(6304), T0).err(),
            Some(KvError::MalformedBlob(BlobFault::BadVersion))
        );
    }

    #[test]
    fn conversion_is_refused_for_plain_secrets() {
        let mut s = store();
        let v = s
            .set(
                "pfx",
                "v".into(),
                Properties {
                    content_type: Some("application/x-pkcs12".into()),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        assert_eq!(
            convert(v, "application/x-pem-file").err(),
            Some(KvError::UnsupportedTransformation {
                from: "Unsupported",
                to: "PEM".into()
            })
        );
    }

    #[test]
    fn debug_output_leaves_the_value_out() {
        let mut s = store();
        let v = set(&mut s, "x", "hunter2-secret");
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
