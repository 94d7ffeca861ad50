//! The emulator's backup blob. **Not encrypted**: anyone holding a blob can read every
//! version's value, so blobs from the emulator are test data only.
//!
//! Format (base64url without padding on the wire, the `value` of `BackupSecretResult`):
//! one length byte `n`, then `n` bytes of ASCII format tag, then UTF-8 JSON
//! `{"name": ..., "versions": [...]}` with every version's id, value, contentType, tags,
//! attributes, created and updated. The real service's blob has the same outer shape
//! (README: a length byte, `AzureKeyVaultSecretBackupV1.microsoft.com`, then a JWE), which
//! is why the two recorded refusals can be told apart the same way here:
//! - the length byte points past the end, or the payload does not parse: "Backup blob is
//!   corrupt." (`recordings/net/RestoreMalformedBackup.json`: "non-existing" starts with
//!   `n` = 110 but has 11 more bytes);
//! - the format tag is not one we know: "Backup blob contains invalid or corrupt
//!   version." (`recordings/js/can_restore_a_secret_malformed_backup_bytes.json`: zero
//!   bytes give an empty tag).
//!
//! A blob made by real Key Vault carries Microsoft's tag but a payload encrypted to the
//! service's keys, which the emulator cannot read: it is refused as corrupt.

use super::error::BlobFault;
use super::store::{Version, is_version_id, validate_name};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The emulator's format tag.
pub const FORMAT_TAG: &str = "VaultsyncEmulatorSecretBackupV1";
/// Real Key Vault's format tag (README, "How the copies were checked").
const AZURE_FORMAT_TAG: &str = "AzureKeyVaultSecretBackupV1.microsoft.com";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    /// In creation order; the last one is the latest.
    pub versions: Vec<Version>,
}

pub fn encode(name: &str, versions: &[Version]) -> String {
    #[derive(Serialize)]
    struct PayloadRef<'a> {
        name: &'a str,
        versions: &'a [Version],
    }
    // Serializing strings, integers and maps to a Vec cannot fail.
    let json = serde_json::to_vec(&PayloadRef { name, versions }).unwrap_or_default();
    let mut bytes = Vec::with_capacity(1 + FORMAT_TAG.len() + json.len());
    bytes.push(FORMAT_TAG.len() as u8);
    bytes.extend_from_slice(FORMAT_TAG.as_bytes());
    bytes.extend_from_slice(&json);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Payload, BlobFault> {
    let trimmed = text.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| BlobFault::Corrupt)?;
    let (&tag_len, rest) = bytes.split_first().ok_or(BlobFault::Corrupt)?;
    let tag_len = usize::from(tag_len);
    if tag_len > rest.len() {
        return Err(BlobFault::Corrupt);
    }
    let (tag, payload) = rest.split_at(tag_len);
    if tag == AZURE_FORMAT_TAG.as_bytes() {
        return Err(BlobFault::Corrupt);
    }
    if tag != FORMAT_TAG.as_bytes() {
        return Err(BlobFault::BadVersion);
    }
    let payload: Payload = serde_json::from_slice(payload).map_err(|_| BlobFault::Corrupt)?;
    // A blob is restored only if every version could have been set: a forged or damaged
    // blob must not bring in what the service itself refuses.
    let distinct_ids: std::collections::HashSet<&str> =
        payload.versions.iter().map(|v| v.id.as_str()).collect();
    let sound = validate_name(&payload.name).is_ok()
        && !payload.versions.is_empty()
        && distinct_ids.len() == payload.versions.len()
        && payload
            .versions
            .iter()
            .all(|v| is_version_id(&v.id) && v.value.len() <= super::store::MAX_VALUE_BYTES);
    if !sound {
        return Err(BlobFault::Corrupt);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str) -> Version {
        Version {
            id: id.into(),
            value: "s3cret".into(),
            content_type: Some("text/plain".into()),
            tags: None,
            enabled: true,
            nbf: None,
            exp: Some(2_000_000_000),
            created: 1,
            updated: 2,
        }
    }

    #[test]
    fn round_trip() {
        let versions = vec![
            version("0123456789abcdef0123456789abcdef"),
            version("fedcba9876543210fedcba9876543210"),
        ];
        let blob = encode("Db-Password", &versions);
        let payload = decode(&blob).expect("decodes");
        assert_eq!(payload.name, "Db-Password");
        assert_eq!(payload.versions, versions);
    }

    #[test]
    fn forged_blobs_with_what_set_refuses_are_corrupt() {
        let id = "0123456789abcdef0123456789abcdef";
        let twice = encode("forged", &[version(id), version(id)]);
        assert_eq!(decode(&twice).err(), Some(BlobFault::Corrupt));
        let mut big = version(id);
        big.value = "x".repeat(super::super::store::MAX_VALUE_BYTES + 1);
        assert_eq!(
            decode(&encode("forged", &[big])).err(),
            Some(BlobFault::Corrupt)
        );
    }

    #[test]
    fn recorded_malformed_blobs() {
        // recordings/js/can_restore_a_secret_malformed_backup_bytes.json: 4728 zero bytes.
        assert_eq!(decode(&"A".repeat(6304)).err(), Some(BlobFault::BadVersion));
        // recordings/net/RestoreMalformedBackup.json: base64 of "non-existing".
        assert_eq!(decode("bm9uLWV4aXN0aW5n").err(), Some(BlobFault::Corrupt));
    }

    #[test]
    fn other_malformed_blobs_are_corrupt() {
        assert_eq!(decode("").err(), Some(BlobFault::Corrupt));
        assert_eq!(decode("!!!").err(), Some(BlobFault::Corrupt));
        let mut bytes = vec![FORMAT_TAG.len() as u8];
        bytes.extend_from_slice(FORMAT_TAG.as_bytes());
        bytes.extend_from_slice(b"{not json");
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(decode(&blob).err(), Some(BlobFault::Corrupt));
        // A real Key Vault blob: right tag, unreadable payload.
        let mut bytes = vec![AZURE_FORMAT_TAG.len() as u8];
        bytes.extend_from_slice(AZURE_FORMAT_TAG.as_bytes());
        bytes.extend_from_slice(b"eyJraWQiOi");
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(decode(&blob).err(), Some(BlobFault::Corrupt));
        // A sound envelope around an unusable payload (no versions).
        assert_eq!(decode(&encode("x", &[])).err(), Some(BlobFault::Corrupt));
    }
}
