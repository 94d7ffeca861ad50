//! Certificates made by the `openssl` CLI for the certificate tests: a root, an
//! intermediate and a leaf. tests/certificates.rs uses it through `common`, and the unit
//! tests of src/controller/certificate.rs include this file by path.

use std::path::Path;
use std::process::Command;

/// Runs `openssl args` in `dir`; panics with openssl's stderr when it fails. Returns stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl prints text")
}

/// Writes into `dir` the keys `root.key`, `int.key` and `leaf.key` (`alg`: `RSA` of 2048
/// bits, or `EC` on `ec_curve`) and the certificates `root.crt` (self-signed, 30 days),
/// `int.crt` (a CA signed by the root, 30 days) and `leaf.crt` (signed by the
/// intermediate, valid for `leaf_days`).
pub fn write_chain(dir: &Path, alg: &str, ec_curve: &str, leaf_days: u32) {
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\n").unwrap();
    let opt = if alg == "RSA" {
        "rsa_keygen_bits:2048".to_owned()
    } else {
        format!("ec_paramgen_curve:{ec_curve}")
    };
    for name in ["root", "int", "leaf"] {
        let key = format!("{name}.key");
        openssl(
            dir,
            &["genpkey", "-algorithm", alg, "-pkeyopt", &opt, "-out", &key],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/CN=Test Root",
            "-days",
            "30",
            "-out",
            "root.crt",
        ],
    );
    let leaf_days = leaf_days.to_string();
    for (name, cn, ca, days) in [
        ("int", "/CN=Test Intermediate", "root", "30"),
        ("leaf", "/CN=leaf.example", "int", leaf_days.as_str()),
    ] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            dir,
            &["req", "-new", "-key", &key, "-subj", cn, "-out", &csr],
        );
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            days,
            "-out",
            &crt,
        ];
        if name == "int" {
            args.extend(["-extfile", "ca.ext"]);
        }
        openssl(dir, &args);
    }
}

/// Exports the leaf of a chain written by [`write_chain`] in `dir` as a PKCS#12 file `out`
/// in `dir`: the leaf, its key and its issuers (`issuers.pem`: the intermediate, then the
/// root), protected by `password` (`""` for none), with openssl's `extra` options (such as
/// `-nomac`). Returns the file's bytes (DER, not Base64).
pub fn write_pfx(dir: &Path, out: &str, password: &str, extra: &[&str]) -> Vec<u8> {
    let issuers = [
        std::fs::read(dir.join("int.crt")).unwrap(),
        std::fs::read(dir.join("root.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("issuers.pem"), issuers).unwrap();
    let passout = format!("pass:{password}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-inkey",
        "leaf.key",
        "-in",
        "leaf.crt",
        "-certfile",
        "issuers.pem",
        "-passout",
        &passout,
        "-out",
        out,
    ];
    args.extend(extra);
    openssl(dir, &args);
    std::fs::read(dir.join(out)).unwrap()
}
