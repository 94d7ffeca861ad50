//! `crds/vaultsecret.yaml` is the output of `vaultsync crd`; this fails when they differ.

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = vaultsync::crd::crd_yaml().expect("generate the CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vaultsecret.yaml");
    let checked_in = std::fs::read_to_string(path).expect("read crds/vaultsecret.yaml");
    assert!(
        checked_in == generated,
        "crds/vaultsecret.yaml is stale: run `cargo run -q -- crd > crds/vaultsecret.yaml`"
    );
}
