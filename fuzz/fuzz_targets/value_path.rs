//! The value path, from Key Vault's bytes to the Secret's: validity, `property`,
//! `decoding`, the size check and the data-hash mark, on arbitrary bytes and an arbitrary
//! property. The first byte picks the decoding, whether a property is used and whether a
//! canary is planted in the value; up to the first NUL after it is the property; the rest
//! is the value as Key Vault holds it.
//!
//! Without property and decoding, the same bytes are read as a certificate entry too (PFX
//! or PEM, the part and content type from the mode byte's upper bits).
//!
//! It must never panic, and: without property and decoding the bytes come out exactly as
//! they went in; a failure's message and Debug form never hold the canary planted in the
//! value. A canary rather than the value itself: a value may innocently be a phrase of the
//! operator's own messages ("not valid") or the property's name, which the message names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use vaultsync::api::{CertificatePart, Decoding};
use vaultsync::controller::data_hash::{DataHashKey, HashMatch, check_recorded};
use vaultsync::controller::decide::{certificate_value, check_size, entry_value};
use vaultsync::source::{FetchedSecret, SecretBytes};

/// Text no message of the operator holds: found in one, it came from the value.
const CANARY: &str = "q7Zc4nArYx9";

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let decoding = if mode & 1 == 1 { Decoding::Base64 } else { Decoding::None };
    let (property, value) = if mode & 2 == 2 {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let property = String::from_utf8_lossy(&rest[..end]).into_owned();
        (Some(property), rest.get(end + 1..).unwrap_or_default())
    } else {
        (None, rest)
    };
    // Planted where the input's last byte says, so that it lands inside JSON strings,
    // Base64 text and everywhere else the fuzzer leads.
    let planted = mode & 4 == 4 && !property.as_deref().is_some_and(|p| p.contains(CANARY));
    let value: Vec<u8> = if planted {
        let at = value.last().map_or(0, |&b| usize::from(b) % (value.len() + 1));
        [&value[..at], CANARY.as_bytes(), &value[at..]].concat()
    } else {
        value.to_vec()
    };
    let value = value.as_slice();
    let fetched = FetchedSecret {
        value: SecretBytes::new(value.to_vec()),
        version: "0".repeat(32),
        content_type: None,
        enabled: Some(true),
        not_before: None,
        expires: None,
    };
    let now = time::OffsetDateTime::UNIX_EPOCH;
    match entry_value("key", "name", property.as_deref(), decoding, &fetched, now) {
        Ok(bytes) => {
            if property.as_deref().is_none_or(str::is_empty) && decoding == Decoding::None {
                assert_eq!(bytes.expose(), value, "the whole value, byte for byte");
                certificate(mode, &bytes, planted);
            }
            let mut data = BTreeMap::new();
            data.insert("key".to_owned(), bytes);
            let _ = check_size(&data);
            let key = DataHashKey::from_bytes(&[7; 32]).expect("a 32-byte key");
            let pairs: Vec<(&str, &[u8])> =
                data.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
            let mark = key.data_hash(pairs.iter().copied());
            assert_eq!(check_recorded(Some(&mark), &key, &pairs), HashMatch::Keyed);
        }
        Err(error) => no_canary(&error, planted),
    }
});

/// A certificate entry on the whole value: the part and the content type from the mode
/// byte's upper bits. PFX and PEM parsing of bytes from Key Vault must never panic.
fn certificate(mode: u8, value: &SecretBytes, planted: bool) {
    let part = match (mode >> 3) & 3 {
        0 => CertificatePart::Chain,
        1 => CertificatePart::Leaf,
        2 => CertificatePart::PrivateKey,
        _ => CertificatePart::Issuers,
    };
    let content_type = match (mode >> 5) & 3 {
        0 => None,
        1 => Some("application/x-pkcs12"),
        2 => Some("application/x-pem-file"),
        _ => Some("text/plain"),
    };
    if let Err(error) = certificate_value("key", "name", part, value, content_type) {
        no_canary(&error, planted);
    }
}

fn no_canary(error: &(impl std::fmt::Display + std::fmt::Debug), planted: bool) {
    if planted {
        assert!(!error.to_string().contains(CANARY), "the message holds the value");
        assert!(!format!("{error:?}").contains(CANARY), "Debug holds the value");
    }
}
