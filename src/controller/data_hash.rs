//! The `vaultsync.io/data-hash` mark: an HMAC-SHA256 of a Secret's data under a key only
//! the operator holds. The mark is shown where data is masked (`kubectl describe`,
//! dashboards), so a plain hash would let anyone guess short values offline and see which
//! Secrets share a value; a keyed hash tells them nothing without the key. Marks of the
//! unkeyed form (a plain SHA-256, before the key existed) are still recognised, so that an
//! upgrade neither reads Key Vault again nor writes data.

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The Secret, in the operator's namespace, that holds the key.
pub const KEY_SECRET_NAME: &str = "vaultsync-hash-key";
/// The data key of that Secret.
pub const KEY_SECRET_DATA_KEY: &str = "key";
/// Bytes of key: SHA-256's block-sized security level, and what `getrandom` gives.
pub const KEY_LEN: usize = 32;
/// How a keyed mark starts; an unkeyed one is 64 hex characters with no prefix.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// The key of the data-hash mark. Never logged: its `Debug` shows nothing of it, and its
/// bytes are wiped when it is dropped.
#[derive(Clone)]
pub struct DataHashKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for DataHashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataHashKey(<redacted>)")
    }
}

impl DataHashKey {
    /// A key of exactly [`KEY_LEN`] bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    /// A new random key from the operating system.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    /// The mark of Secret data as written: `hmac-sha256:` and the hex HMAC-SHA256 of the
    /// keys and values (sorted by key, length-prefixed, so no two different maps collide).
    pub fn data_hash<'a>(&self, data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
        // Cannot fail: HMAC accepts a key of any length (RFC 2104 hashes a long one first).
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref()).expect("HMAC takes any key");
        encode(data, |bytes| mac.update(bytes));
        format!("{HMAC_PREFIX}{}", hex(&mac.finalize().into_bytes()))
    }
}

/// Feeds `data` to `sink` in the one encoding both forms of the mark hash.
fn encode<'a>(data: impl IntoIterator<Item = (&'a str, &'a [u8])>, mut sink: impl FnMut(&[u8])) {
    let mut sorted: Vec<(&str, &[u8])> = data.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in sorted {
        sink(&(k.len() as u64).to_be_bytes());
        sink(k.as_bytes());
        sink(&(v.len() as u64).to_be_bytes());
        sink(v);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The unkeyed mark earlier versions wrote: hex SHA-256 of the same encoding. Only read,
/// to recognise those marks; never written.
pub fn legacy_data_hash<'a>(data: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    encode(data, |bytes| hasher.update(bytes));
    hex(&hasher.finalize())
}

/// Whether a recorded mark is in the unkeyed form: 64 lowercase hex characters.
pub fn is_legacy_form(recorded: &str) -> bool {
    recorded.len() == 64
        && recorded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How a Secret's recorded mark stands against its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMatch {
    /// The keyed mark of this data.
    Keyed,
    /// The unkeyed mark of this data: in sync, the mark only needs rewriting.
    Legacy,
    /// No mark, or the mark of other data: the data drifted.
    Neither,
}

/// Judges `recorded` (the annotation's value) against `data`, the managed keys as they
/// stand in the Secret.
pub fn check_recorded(
    recorded: Option<&str>,
    key: &DataHashKey,
    data: &[(&str, &[u8])],
) -> HashMatch {
    let Some(recorded) = recorded else {
        return HashMatch::Neither;
    };
    if recorded.starts_with(HMAC_PREFIX) {
        if recorded == key.data_hash(data.iter().copied()) {
            return HashMatch::Keyed;
        }
    } else if is_legacy_form(recorded) && recorded == legacy_data_hash(data.iter().copied()) {
        return HashMatch::Legacy;
    }
    HashMatch::Neither
}

/// Reads the key from `namespace`/[`KEY_SECRET_NAME`], creating the Secret with a new
/// random key when it is absent. Two replicas starting together both try to create it;
/// the loser (409) reads the winner's, so they share one key. The key is in no message.
pub async fn load_or_create_key(client: &Client, namespace: &str) -> anyhow::Result<DataHashKey> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_ref = format!("Secret {namespace}/{KEY_SECRET_NAME}");
    let rbac_hint = "the operator needs get and create on Secrets in its own namespace";
    if let Some(secret) = api
        .get_opt(KEY_SECRET_NAME)
        .await
        .with_context(|| format!("read the data-hash key {secret_ref} ({rbac_hint})"))?
    {
        return key_of(&secret, &secret_ref);
    }
    let key = DataHashKey::generate().context("no random bytes for the data-hash key")?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(KEY_SECRET_NAME.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/part-of".to_owned(),
                    "vaultsync".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        // Replaced only by deleting it, never edited by accident.
        immutable: Some(true),
        data: Some([(KEY_SECRET_DATA_KEY.to_owned(), ByteString(key.0.to_vec()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %secret_ref, "created the data-hash key");
            Ok(key)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(KEY_SECRET_NAME).await.with_context(|| {
                format!("read the data-hash key {secret_ref} another replica created")
            })?;
            key_of(&secret, &secret_ref)
        }
        Err(e) => {
            Err(e).with_context(|| format!("create the data-hash key {secret_ref} ({rbac_hint})"))
        }
    }
}

fn key_of(secret: &Secret, secret_ref: &str) -> anyhow::Result<DataHashKey> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(KEY_SECRET_DATA_KEY))
        .and_then(|bytes| DataHashKey::from_bytes(&bytes.0))
        .with_context(|| {
            format!(
                "{secret_ref} does not hold a {KEY_LEN}-byte '{KEY_SECRET_DATA_KEY}'; delete it and the operator makes a new key at its next start"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataHashKey {
        DataHashKey::from_bytes(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn the_keyed_mark_depends_on_key_keys_and_values_not_order() {
        let k = key(1);
        let a = k.data_hash([("a", b"1".as_slice()), ("b", b"2".as_slice())]);
        assert!(a.starts_with(HMAC_PREFIX), "{a}");
        assert_eq!(a.len(), HMAC_PREFIX.len() + 64);
        assert_eq!(
            a,
            k.data_hash([("b", b"2".as_slice()), ("a", b"1".as_slice())])
        );
        assert_ne!(
            a,
            k.data_hash([("a", b"1".as_slice()), ("b", b"3".as_slice())])
        );
        assert_ne!(
            k.data_hash([("ab", b"".as_slice())]),
            k.data_hash([("a", b"b".as_slice())])
        );
        assert_ne!(
            a,
            key(2).data_hash([("a", b"1".as_slice()), ("b", b"2".as_slice())]),
            "another key, another mark"
        );
    }

    #[test]
    fn the_keyed_mark_is_hmac_sha256_of_the_encoding() {
        // RFC 4231 test case 2 (key "Jefe"), through the same HMAC the mark uses, pins the
        // algorithm; the mark is that HMAC over the length-prefixed encoding.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let k = key(7);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7; KEY_LEN]).unwrap();
        mac.update(&1u64.to_be_bytes());
        mac.update(b"k");
        mac.update(&2u64.to_be_bytes());
        mac.update(b"v!");
        assert_eq!(
            k.data_hash([("k", b"v!".as_slice())]),
            format!("{HMAC_PREFIX}{}", hex(&mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn the_legacy_mark_is_plain_sha256_and_recognised_by_its_form() {
        let legacy = legacy_data_hash([("password", b"1234".as_slice())]);
        assert!(is_legacy_form(&legacy));
        assert_eq!(legacy.len(), 64);
        // What made it an oracle: anyone can recompute it from a guess.
        let guess = (0..10_000)
            .map(|n| format!("{n:04}"))
            .find(|pin| legacy_data_hash([("password", pin.as_bytes())]) == legacy);
        assert_eq!(guess.as_deref(), Some("1234"));
        let keyed = key(1).data_hash([("password", b"1234".as_slice())]);
        assert!(!is_legacy_form(&keyed));
        assert!(
            (0..10_000).map(|n| format!("{n:04}")).all(|pin| {
                let guess = [("password", pin.as_bytes())];
                legacy_data_hash(guess) != keyed
                    && !keyed.ends_with(&legacy_data_hash(guess))
                    && key(2).data_hash(guess) != keyed
            }),
            "a dictionary without the key finds nothing"
        );
        assert!(!is_legacy_form(&legacy.to_uppercase()));
        assert!(!is_legacy_form(&legacy[1..]));
    }

    #[test]
    fn recorded_marks_are_keyed_legacy_or_drift() {
        let k = key(1);
        let data: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", b"2")];
        let keyed = k.data_hash(data.iter().copied());
        let legacy = legacy_data_hash(data.iter().copied());
        assert_eq!(check_recorded(Some(&keyed), &k, &data), HashMatch::Keyed);
        assert_eq!(check_recorded(Some(&legacy), &k, &data), HashMatch::Legacy);
        assert_eq!(check_recorded(None, &k, &data), HashMatch::Neither);
        assert_eq!(check_recorded(Some(""), &k, &data), HashMatch::Neither);
        // The data changed since either mark was written.
        let edited: Vec<(&str, &[u8])> = vec![("a", b"1"), ("b", b"3")];
        assert_eq!(
            check_recorded(Some(&keyed), &k, &edited),
            HashMatch::Neither
        );
        assert_eq!(
            check_recorded(Some(&legacy), &k, &edited),
            HashMatch::Neither
        );
        // A keyed mark of another key (the key Secret was replaced) is not trusted.
        assert_eq!(
            check_recorded(Some(&keyed), &key(2), &data),
            HashMatch::Neither
        );
        // The legacy digest behind the keyed prefix is not the keyed form.
        let disguised = format!("{HMAC_PREFIX}{legacy}");
        assert_eq!(
            check_recorded(Some(&disguised), &k, &data),
            HashMatch::Neither
        );
    }

    #[test]
    fn the_key_is_never_shown() {
        let k = DataHashKey::generate().unwrap();
        let shown = format!("{k:?}");
        assert_eq!(shown, "DataHashKey(<redacted>)");
        assert_ne!(k.0.as_ref(), &[0u8; KEY_LEN], "random bytes were filled in");
        assert!(DataHashKey::from_bytes(&[0; 31]).is_none());
        assert!(DataHashKey::from_bytes(&[0; 33]).is_none());
    }
}
