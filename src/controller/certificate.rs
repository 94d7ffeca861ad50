//! Certificate entries (`remoteRef.certificate`): a Key Vault certificate's backing secret,
//! PFX or PEM, read into the PEM parts a `kubernetes.io/tls` Secret holds. Pure functions.
//!
//! Key Vault keeps a certificate's private key and chain in a secret of the certificate's
//! name: `contentType: application/x-pkcs12` with the Base64 of a password-less PKCS#12
//! archive, or `application/x-pem-file` with PEM text. Key Vault can convert PFX to PEM
//! itself (`outContentType`, api-version 2025-07-01), but only for certificate-backed
//! secrets: a PFX that was stored as a plain secret is refused (400 BadParameter, recorded
//! in `keyvault-conformance/`), so the operator converts every value itself, the same way
//! whatever created it.

use crate::api::CertificatePart;
use crate::controller::decide::{Base64Error, decode_base64};
use crate::source::SecretBytes;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// The content type Key Vault gives a certificate's secret kept as PFX.
pub const PFX_CONTENT_TYPE: &str = "application/x-pkcs12";
/// The content type Key Vault gives a certificate's secret kept as PEM.
pub const PEM_CONTENT_TYPE: &str = "application/x-pem-file";

/// How a certificate value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFormat {
    /// Base64 of a PKCS#12 archive.
    Pfx,
    /// PEM text: `CERTIFICATE` blocks and one private key block, in any order.
    Pem,
}

impl std::fmt::Display for CertificateFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertificateFormat::Pfx => "PFX",
            CertificateFormat::Pem => "PEM",
        })
    }
}

/// The format of a value: its Key Vault content type when that names one of the two
/// formats (compared without case and parameters); otherwise PEM when the value holds a
/// `-----BEGIN ` line, else PFX (a PFX imported as a plain secret often has no content
/// type).
pub fn format_of(content_type: Option<&str>, value: &[u8]) -> CertificateFormat {
    let named = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match named.as_deref() {
        Some(PFX_CONTENT_TYPE) => CertificateFormat::Pfx,
        Some(PEM_CONTENT_TYPE) => CertificateFormat::Pem,
        _ if value.windows(11).any(|w| w == b"-----BEGIN ") => CertificateFormat::Pem,
        _ => CertificateFormat::Pfx,
    }
}

/// Why a value is not a usable certificate. Says what was found or missing, never any
/// part of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A PFX value must be Base64 (as Key Vault returns a PFX).
    #[error("the PFX is not valid Base64: {0}")]
    NotBase64(Base64Error),
    /// The archive could not be read; the text says in which way.
    #[error("{0}")]
    Pkcs12(&'static str),
    /// A PEM value with a block that does not parse.
    #[error("the PEM is not well-formed (a block's framing or Base64 is broken)")]
    BadPem,
    /// A PEM value with no `CERTIFICATE` block (a PFX holds no certificate bag).
    #[error("it holds no certificate")]
    NoCertificate,
    /// The `index`th certificate (from 1, in the value's order) is not X.509.
    #[error("certificate {0} of the value is not a valid X.509 certificate")]
    BadCertificate(usize),
    /// `ENCRYPTED PRIVATE KEY`: Key Vault's certificate secrets hold unencrypted keys.
    #[error("its private key is encrypted (ENCRYPTED PRIVATE KEY); only unencrypted keys are read")]
    EncryptedKey,
    /// More than one private key: which certificate is the leaf would be a guess.
    #[error("it holds {0} private keys; one is expected")]
    SeveralKeys(usize),
    /// The key block does not parse as the key type its label names.
    #[error("its private key is not a valid PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key")]
    BadKey,
    /// A key of a type rustls cannot use (RSA, ECDSA P-256/P-384/P-521 and Ed25519 are).
    #[error(
        "its private key is of a type that is not supported (RSA, ECDSA P-256, P-384, P-521 and Ed25519 are)"
    )]
    UnsupportedKey,
    /// No certificate carries the private key's public key.
    #[error("its private key belongs to none of its certificates")]
    KeyMatchesNoCertificate,
    /// `PrivateKey` asked of a value without a key.
    #[error("it holds no private key")]
    NoPrivateKey,
    /// `Issuers` asked of a value with the leaf alone.
    #[error("it holds no issuer of the leaf certificate (the chain is the leaf alone)")]
    NoIssuers,
}

/// A certificate value, read: the leaf and its chain as DER, the key as PKCS#8 DER.
/// `Debug` shows the shape only (the key is secret; the certificates are not, but stay out
/// of logs too).
#[derive(Clone)]
pub struct CertificateBundle {
    /// The leaf, then its issuers found in the value, nearest first (DER).
    chain: Vec<Vec<u8>>,
    /// The leaf's private key (PKCS#8 DER), when the value holds one.
    key: Option<SecretBytes>,
    /// The leaf's `notAfter`.
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for CertificateBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateBundle")
            .field("certificates", &self.chain.len())
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl CertificateBundle {
    /// The leaf certificate's `notAfter`: the certificate's own expiry, which
    /// `status.expiresAt` takes when it comes before the Key Vault version's `exp`.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The number of certificates in the chain, the leaf included.
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }

    /// One part as PEM text with LF line endings (see [`CertificatePart`]).
    pub fn part(&self, part: CertificatePart) -> Result<SecretBytes, CertificateError> {
        let certs = |ders: &[Vec<u8>]| {
            let blocks: Vec<pem::Pem> = ders
                .iter()
                .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
                .collect();
            SecretBytes::new(pem::encode_many_config(&blocks, pem_config()).into_bytes())
        };
        match part {
            CertificatePart::Chain => Ok(certs(&self.chain)),
            CertificatePart::Leaf => Ok(certs(&self.chain[..1])),
            CertificatePart::Issuers if self.chain.len() < 2 => Err(CertificateError::NoIssuers),
            CertificatePart::Issuers => Ok(certs(&self.chain[1..])),
            CertificatePart::PrivateKey => {
                let key = self.key.as_ref().ok_or(CertificateError::NoPrivateKey)?;
                let block = pem::Pem::new("PRIVATE KEY", key.expose().to_vec());
                let text = zeroize::Zeroizing::new(pem::encode_config(&block, pem_config()));
                Ok(SecretBytes::new(text.as_bytes().to_vec()))
            }
        }
    }
}

fn pem_config() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

/// Reads a certificate value of `format`: a PFX is Base64-decoded (as
/// [`decode_base64`] does) and opened with the empty password (its MAC, when present,
/// verified; PBES1 and PBES2 encryption); a PEM's `CERTIFICATE` blocks and its one
/// `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block are taken, other blocks and
/// text between blocks ignored. Then [`bundle`] orders them.
pub fn read(
    value: &[u8],
    format: CertificateFormat,
) -> Result<CertificateBundle, CertificateError> {
    let (certs, keys) = match format {
        CertificateFormat::Pfx => read_pfx(value)?,
        CertificateFormat::Pem => read_pem(value)?,
    };
    bundle(certs, keys)
}

/// A key as read, PKCS#8 DER.
type Pkcs8 = SecretBytes;

fn read_pfx(value: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<Pkcs8>), CertificateError> {
    let der = decode_base64(value).map_err(CertificateError::NotBase64)?;
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der.expose(), "")
        .map_err(|e| CertificateError::Pkcs12(pkcs12_failure(&e)))?;
    let certs = archive
        .certs
        .iter()
        .map(|bag| bag.cert.as_der().to_vec())
        .collect();
    let keys = archive
        .keys
        .iter()
        .map(|bag| SecretBytes::new(bag.key.as_der().to_vec()))
        .collect();
    Ok((certs, keys))
}

/// What a PKCS#12 failure means to the user (the library's own text can quote parser
/// positions and is not needed).
fn pkcs12_failure(e: &p12_keystore::error::Error) -> &'static str {
    use p12_keystore::error::Error as E;
    match e {
        E::MacError(_) => {
            "the PFX's MAC does not verify with the empty password (a password-protected PFX? Key Vault's certificate secrets have none)"
        }
        E::UnpadError | E::InvalidData | E::InvalidLength => {
            "the PFX does not decrypt with the empty password (a password-protected PFX? Key Vault's certificate secrets have none)"
        }
        E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm | E::Pkcs5Error(_) => {
            "the PFX is encrypted or MACed with a scheme that is not supported"
        }
        E::X509Error(_) | E::UnsupportedCertificateType => {
            "the PFX holds a certificate that is not a valid X.509 certificate"
        }
        E::InvalidPrivateKey => "the PFX holds a private key that cannot be read",
        _ => "the value is not a PKCS#12 (PFX) archive",
    }
}

fn read_pem(value: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<Pkcs8>), CertificateError> {
    let blocks = pem::parse_many(value).map_err(|_| CertificateError::BadPem)?;
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for block in blocks {
        let label = block.tag().to_owned();
        match label.as_str() {
            "CERTIFICATE" => certs.push(block.into_contents()),
            "ENCRYPTED PRIVATE KEY" => return Err(CertificateError::EncryptedKey),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                let der = zeroize::Zeroizing::new(block.into_contents());
                keys.push(pkcs8_of(&label, &der)?);
            }
            _ => {}
        }
    }
    Ok((certs, keys))
}

/// A PEM key block as PKCS#8 DER: `PRIVATE KEY` as it is, `RSA PRIVATE KEY` (PKCS#1) and
/// `EC PRIVATE KEY` (SEC1, curve P-256, P-384 or P-521) re-encoded.
pub fn pkcs8_of(label: &str, der: &[u8]) -> Result<SecretBytes, CertificateError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair,
    };
    match label {
        "PRIVATE KEY" => Ok(SecretBytes::new(der.to_vec())),
        "RSA PRIVATE KEY" => {
            let pair =
                aws_lc_rs::rsa::KeyPair::from_der(der).map_err(|_| CertificateError::BadKey)?;
            let pkcs8 = pair.as_der().map_err(|_| CertificateError::BadKey)?;
            Ok(SecretBytes::new(pkcs8.as_ref().to_vec()))
        }
        "EC PRIVATE KEY" => [
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            &ECDSA_P521_SHA512_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(|alg| EcdsaKeyPair::from_private_key_der(alg, der).ok())
        .and_then(|pair| pair.to_pkcs8v1().ok())
        .map(|doc| SecretBytes::new(doc.as_ref().to_vec()))
        .ok_or(CertificateError::BadKey),
        _ => Err(CertificateError::BadKey),
    }
}

/// A certificate as far as ordering needs it.
struct Parsed<'a> {
    der: &'a [u8],
    subject: &'a [u8],
    issuer: &'a [u8],
    spki: &'a [u8],
    not_after: i64,
}

/// Orders certificates and at most one key into a bundle. The leaf is the certificate
/// whose public key is the key's ([`CertificateError::KeyMatchesNoCertificate`] when
/// none); without a key, the first certificate (in the value's order) that issued none of
/// the others. The chain follows issuer names from the leaf (exact DER of the names) to a
/// self-issued certificate or one whose issuer the value lacks; certificates outside it
/// are left out.
pub fn bundle(
    certs: Vec<Vec<u8>>,
    keys: Vec<Pkcs8>,
) -> Result<CertificateBundle, CertificateError> {
    if keys.len() > 1 {
        return Err(CertificateError::SeveralKeys(keys.len()));
    }
    if certs.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let parsed: Vec<x509_parser::certificate::X509Certificate<'_>> = certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert)
                .map_err(|_| CertificateError::BadCertificate(i + 1))
        })
        .collect::<Result<_, _>>()?;
    let parsed: Vec<Parsed<'_>> = parsed
        .iter()
        .zip(&certs)
        .map(|(cert, der)| Parsed {
            der,
            subject: cert.subject().as_raw(),
            issuer: cert.issuer().as_raw(),
            spki: cert.public_key().raw,
            not_after: cert.validity().not_after.timestamp(),
        })
        .collect();
    let key = keys.into_iter().next();
    let leaf = match &key {
        Some(key) => {
            let spki = public_key_of(key)?;
            parsed
                .iter()
                .position(|c| c.spki == spki.as_slice())
                .ok_or(CertificateError::KeyMatchesNoCertificate)?
        }
        None => parsed
            .iter()
            .enumerate()
            .position(|(i, c)| {
                !parsed
                    .iter()
                    .enumerate()
                    .any(|(j, other)| j != i && other.issuer == c.subject)
            })
            .unwrap_or(0),
    };
    let mut order = vec![leaf];
    loop {
        let current = &parsed[*order.last().unwrap_or(&leaf)];
        if current.issuer == current.subject {
            break;
        }
        match (0..parsed.len()).find(|i| !order.contains(i) && parsed[*i].subject == current.issuer)
        {
            Some(next) => order.push(next),
            None => break,
        }
    }
    let not_after = OffsetDateTime::from_unix_timestamp(parsed[leaf].not_after)
        .map_err(|_| CertificateError::BadCertificate(leaf + 1))?;
    Ok(CertificateBundle {
        chain: order.iter().map(|i| parsed[*i].der.to_vec()).collect(),
        key,
        not_after,
    })
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 key, as rustls derives it.
fn public_key_of(key: &SecretBytes) -> Result<Vec<u8>, CertificateError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.expose().to_vec()));
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|_| CertificateError::UnsupportedKey)?;
    signing
        .public_key()
        .map(|spki| spki.as_ref().to_vec())
        .ok_or(CertificateError::UnsupportedKey)
}

/// The test certificates' maker, shared with tests/certificates.rs.
#[cfg(test)]
#[path = "../../tests/common/openssl.rs"]
mod openssl_cli;

#[cfg(test)]
mod tests {
    //! Certificates made by the `openssl` CLI in a temporary directory: a chain root →
    //! intermediate → leaf with RSA or EC keys, read from PEM and PFX.

    use super::openssl_cli::{openssl, write_chain, write_pfx};
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A fresh directory holding `root`, `int` and `leaf` keys and certificates of `alg`
    /// (`RSA` or `EC`).
    fn chain(alg: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vaultsync-cert-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        write_chain(&dir, alg, "P-256", 10);
        dir
    }

    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn file(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    fn der_of(pem_text: &[u8]) -> Vec<Vec<u8>> {
        pem::parse_many(pem_text)
            .unwrap()
            .into_iter()
            .map(|p| p.into_contents())
            .collect()
    }

    fn pfx(dir: &Path, extra: &[&str]) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(write_pfx(dir, "out.pfx", "", extra))
            .into_bytes()
    }

    fn expected_chain(dir: &Path) -> Vec<Vec<u8>> {
        ["leaf.crt", "int.crt", "root.crt"]
            .iter()
            .flat_map(|f| der_of(&file(dir, f)))
            .collect()
    }

    #[test]
    fn a_pem_with_the_key_after_shuffled_certificates_gives_leaf_first_and_pkcs8() {
        for alg in ["RSA", "EC"] {
            let dir = chain(alg);
            let mut value = file(&dir, "root.crt");
            value.extend(b"some text between blocks\n");
            value.extend(file(&dir, "leaf.crt"));
            value.extend(file(&dir, "int.crt"));
            value.extend(file(&dir, "leaf.key"));
            assert_eq!(format_of(None, &value), CertificateFormat::Pem);
            let bundle = read(&value, CertificateFormat::Pem).unwrap();
            let chain = bundle.part(CertificatePart::Chain).unwrap();
            assert_eq!(der_of(chain.expose()), expected_chain(&dir), "{alg}");
            assert!(!chain.expose().contains(&b'\r'));
            let issuers = bundle.part(CertificatePart::Issuers).unwrap();
            assert_eq!(der_of(issuers.expose()), expected_chain(&dir)[1..].to_vec());
            let leaf = bundle.part(CertificatePart::Leaf).unwrap();
            assert_eq!(der_of(leaf.expose()), expected_chain(&dir)[..1].to_vec());
            let key = bundle.part(CertificatePart::PrivateKey).unwrap();
            assert!(key.expose().starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
            assert_eq!(der_of(key.expose()), der_of(&file(&dir, "leaf.key")));
            std::fs::remove_dir_all(dir).ok();
        }
    }

    #[test]
    fn pkcs1_and_sec1_keys_become_pkcs8_of_the_same_key() {
        for (alg, tool, flag) in [("RSA", "rsa", "-traditional"), ("EC", "ec", "")] {
            let dir = chain(alg);
            let mut args = vec![tool, "-in", "leaf.key", "-out", "legacy.key"];
            if !flag.is_empty() {
                args.push(flag);
            }
            openssl(&dir, &args);
            let legacy = file(&dir, "legacy.key");
            let label = if alg == "RSA" {
                "RSA PRIVATE KEY"
            } else {
                "EC PRIVATE KEY"
            };
            assert!(String::from_utf8_lossy(&legacy).contains(label));
            let mut value = file(&dir, "leaf.crt");
            value.extend(legacy);
            let bundle = read(&value, CertificateFormat::Pem).unwrap();
            let key = bundle.part(CertificatePart::PrivateKey).unwrap();
            // The same key: it still matches the leaf when read back as PKCS#8.
            let again = read(
                &[file(&dir, "leaf.crt"), key.expose().to_vec()].concat(),
                CertificateFormat::Pem,
            )
            .unwrap();
            assert_eq!(again.chain_len(), 1);
            assert!(key.expose().starts_with(b"-----BEGIN PRIVATE KEY-----"));
            std::fs::remove_dir_all(dir).ok();
        }
    }

    #[test]
    fn a_pfx_with_and_without_a_mac_reads_like_the_pem() {
        let dir = chain("EC");
        for extra in [&[][..], &["-nomac"][..]] {
            let value = pfx(&dir, extra);
            assert_eq!(format_of(None, &value), CertificateFormat::Pfx);
            let bundle = read(&value, CertificateFormat::Pfx).unwrap();
            let chain = bundle.part(CertificatePart::Chain).unwrap();
            assert_eq!(der_of(chain.expose()), expected_chain(&dir), "{extra:?}");
            let key = bundle.part(CertificatePart::PrivateKey).unwrap();
            assert_eq!(der_of(key.expose()), der_of(&file(&dir, "leaf.key")));
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_leaf_not_after_is_read() {
        let dir = chain("EC");
        let out = Command::new("openssl")
            .args([
                "x509", "-in", "leaf.crt", "-noout", "-enddate", "-dateopt", "iso_8601",
            ])
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let bundle = read(&file(&dir, "leaf.crt"), CertificateFormat::Pem).unwrap();
        let expected: k8s_openapi::jiff::Timestamp =
            text.trim().trim_start_matches("notAfter=").parse().unwrap();
        let expected = OffsetDateTime::from_unix_timestamp(expected.as_second()).unwrap();
        assert_eq!(bundle.not_after(), expected);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refusals_say_what_is_wrong_and_never_quote_the_value() {
        let dir = chain("EC");
        let leaf = file(&dir, "leaf.crt");
        let other_key = file(&dir, "int.key");
        let value = |parts: &[&[u8]]| parts.concat();
        let cases: Vec<(
            Vec<u8>,
            CertificateFormat,
            CertificatePart,
            CertificateError,
        )> = vec![
            (
                b"plain-secret-value".to_vec(),
                CertificateFormat::Pfx,
                CertificatePart::Chain,
                CertificateError::NotBase64(decode_base64(b"plain-secret-value").unwrap_err()),
            ),
            (
                b"cGxhaW4tc2VjcmV0LXZhbHVl".to_vec(),
                CertificateFormat::Pfx,
                CertificatePart::Chain,
                CertificateError::Pkcs12("the value is not a PKCS#12 (PFX) archive"),
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
                CertificateFormat::Pem,
                CertificatePart::Chain,
                CertificateError::BadPem,
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                CertificateFormat::Pem,
                CertificatePart::Chain,
                CertificateError::BadCertificate(1),
            ),
            (
                file(&dir, "leaf.key"),
                CertificateFormat::Pem,
                CertificatePart::Chain,
                CertificateError::NoCertificate,
            ),
            (
                value(&[&leaf, &other_key]),
                CertificateFormat::Pem,
                CertificatePart::Chain,
                CertificateError::KeyMatchesNoCertificate,
            ),
            (
                value(&[&leaf, &other_key, &file(&dir, "leaf.key")]),
                CertificateFormat::Pem,
                CertificatePart::Chain,
                CertificateError::SeveralKeys(2),
            ),
            (
                leaf.clone(),
                CertificateFormat::Pem,
                CertificatePart::PrivateKey,
                CertificateError::NoPrivateKey,
            ),
            (
                leaf.clone(),
                CertificateFormat::Pem,
                CertificatePart::Issuers,
                CertificateError::NoIssuers,
            ),
        ];
        for (value, format, part, expected) in cases {
            let got = read(&value, format).and_then(|b| b.part(part)).unwrap_err();
            assert_eq!(got, expected);
            let text = got.to_string();
            assert!(
                !text.contains("plain-secret") && !text.contains("AAAA"),
                "{text}"
            );
        }
        // A PFX with a password is refused as such.
        use base64::Engine;
        let locked = base64::engine::general_purpose::STANDARD.encode(write_pfx(
            &dir,
            "locked.pfx",
            "hunter2",
            &[],
        ));
        let e = read(locked.as_bytes(), CertificateFormat::Pfx).unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        let debug = format!(
            "{:?}",
            read(
                &value(&[&leaf, &file(&dir, "leaf.key")]),
                CertificateFormat::Pem
            )
            .unwrap()
        );
        assert!(
            debug.contains("<redacted>") && !debug.contains("BEGIN"),
            "{debug}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_content_type_decides_the_format_and_the_value_otherwise() {
        let pem = b"-----BEGIN CERTIFICATE-----";
        assert_eq!(
            format_of(Some("application/x-pkcs12"), pem),
            CertificateFormat::Pfx
        );
        assert_eq!(
            format_of(Some("Application/X-PEM-File; charset=utf-8"), b"MIIK"),
            CertificateFormat::Pem
        );
        assert_eq!(format_of(Some("text/plain"), pem), CertificateFormat::Pem);
        assert_eq!(format_of(None, b"MIIKcQIBAzCC"), CertificateFormat::Pfx);
    }
}
