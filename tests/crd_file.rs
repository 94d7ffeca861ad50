//! `crds/vaultsecret.yaml` is the output of `vaultsync crd`, and the Helm chart's
//! `deploy/charts/vaultsync/crds/vaultsecret.yaml` (which the kustomization also installs)
//! is a byte-for-byte copy of it; this fails when any of them differ.

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = vaultsync::crd::crd_yaml().expect("generate the CRD");
    for file in [
        "crds/vaultsecret.yaml",
        "deploy/charts/vaultsync/crds/vaultsecret.yaml",
    ] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let checked_in =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {file}: {e}"));
        assert!(
            checked_in == generated,
            "{file} is stale: run `cargo run -q -- crd > {file}`"
        );
    }
}
