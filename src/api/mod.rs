//! `VaultSecret` (`vaultsync.io/v1alpha1`): the API contract. These types are the source
//! of truth; `vaultsync crd` prints the CRD generated from them, with the schema and CEL
//! rules that refuse bad specs at admission.

mod reason;

pub use reason::Reason;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label on every Secret the operator writes.
pub const MANAGED_BY_LABEL: &str = "vaultsync.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "vaultsync";
/// Annotation naming the VaultSecret (`namespace/name`) a Secret is synced from.
pub const SOURCE_ANNOTATION: &str = "vaultsync.io/source";
/// Annotation holding the hash of the data as written, so drift is seen without Key Vault.
/// Written by Owner and Orphan writers (the Secret's only writer).
pub const DATA_HASH_ANNOTATION: &str = "vaultsync.io/data-hash";
/// Annotation with the uid of the Owner or Orphan VaultSecret that wrote the Secret: the
/// evidence a Secret whose ownerReference was stripped is re-adopted on (by uid, so a
/// VaultSecret re-created with the same name does not take its predecessor's Secret).
pub const SOURCE_UID_ANNOTATION: &str = "vaultsync.io/source-uid";
/// Annotation the owner of an existing Secret sets to let Merge VaultSecrets of its
/// namespace write into it: their names, comma-separated.
pub const MERGE_FROM_ANNOTATION: &str = "vaultsync.io/merge-from";
/// Annotation with the uid of the Merge VaultSecret that created the Secret (set only when
/// the operator creates it), so that writer keeps writing the Secret it made.
pub const CREATED_BY_ANNOTATION: &str = "vaultsync.io/created-by";
/// Prefix of a Merge writer's own name mark, `vaultsync.io/merged-by.<uid>: <name>`.
pub const MERGED_BY_PREFIX: &str = "vaultsync.io/merged-by.";
/// Prefix of a Merge writer's own data-hash mark, `vaultsync.io/data-hash.<uid>`.
pub const MERGE_HASH_PREFIX: &str = "vaultsync.io/data-hash.";
/// The prefix of every mark; `target.labels` and `target.annotations` may not use it, so no
/// spec can make the operator write a mark it did not decide on.
pub const MARK_PREFIX: &str = "vaultsync.io/";
/// Secret types the spec may not name: the token controller fills a
/// `kubernetes.io/service-account-token` Secret with a non-expiring token of the
/// ServiceAccount its annotation names, and a `bootstrap.kubernetes.io/token` Secret in
/// `kube-system` is a credential that joins nodes to the cluster. Either would turn a
/// VaultSecret into a way to mint cluster credentials.
pub const REFUSED_SECRET_TYPES: [&str; 2] = [
    "kubernetes.io/service-account-token",
    "bootstrap.kubernetes.io/token",
];
/// The condition type that says whether the Secret holds every key of this generation.
pub const READY: &str = "Ready";
/// The condition type that says whether the last read of Key Vault (and write of the
/// Secret) succeeded: False with the failure's reason while refreshes fail, even though
/// `Ready` stays True as long as the Secret holds this generation's keys.
pub const REFRESHED: &str = "Refreshed";
/// Annotation on a VaultSecret: any new value forces one Key Vault read now, whether or
/// not a refresh is due (`kubectl annotate vsec app vaultsync.io/refresh=$(date +%s) --overwrite`).
/// The value handled last is kept in `status.lastRefreshRequest`.
pub const REFRESH_ANNOTATION: &str = "vaultsync.io/refresh";
/// Pod template annotation a rollout restart sets to the time of the restart (RFC 3339,
/// whole seconds), as `kubectl rollout restart` sets `kubectl.kubernetes.io/restartedAt`:
/// a changed pod template makes the workload's controller roll new pods.
pub const RESTARTED_AT_ANNOTATION: &str = "vaultsync.io/restartedAt";
/// The condition type that says how the last rollout restart of
/// `spec.rolloutRestartTargets` went (absent while the spec names no target).
pub const ROLLOUT_RESTARTS: &str = "RolloutRestarts";
/// The condition type that says whether `status.expiresAt` is near: True (`Expiring`)
/// within the operator's `--expiry-warning` window, True (`Expired`) once past, False
/// (`NotExpiring`) before; absent when no synced version has an expiry.
pub const EXPIRING: &str = "Expiring";

/// Syncs secrets from Azure Key Vault into a Kubernetes Secret of the same namespace,
/// keeps it current when Key Vault rotates them, and repairs it when it is edited.
// clippy reads the repeated `printcolumn(type_ = ..)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vaultsync.io",
    version = "v1alpha1",
    kind = "VaultSecret",
    namespaced,
    status = "VaultSecretStatus",
    shortname = "vsec",
    category = "vaultsync",
    doc = "A VaultSecret syncs Azure Key Vault secrets into a Kubernetes Secret and keeps it current.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Refreshed",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Refreshed")].status"#
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    // A string, not a date: kubectl prints a date column as an age, and a time ahead as
    // `<invalid>`.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecretSpec {
    /// URL of the Key Vault, e.g. `https://my-vault.vault.azure.net`: HTTPS, a host and an
    /// optional port only (no path, query, fragment or user info; one trailing `/` is
    /// fine). The operator calls only hosts on Key Vault's DNS suffixes and those its
    /// `--extra-vault-suffixes` flag adds.
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''").message("vaultUrl must be an https:// URL with a host, e.g. https://my-vault.vault.azure.net"))]
    #[x_kube(validation = Rule::new("self.matches('^[hH][tT][tT][pP][sS]://[^/?#@]+/?$')").message("vaultUrl must be only https:// and a host with an optional port: no path, query, fragment or user info, e.g. https://my-vault.vault.azure.net"))]
    #[schemars(length(max = 2048))]
    pub vault_url: String,

    /// The identity that reads Key Vault. Omitted: the operator's own identity (which an
    /// operator flag may forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,

    /// How often Key Vault is read again: a duration such as `30s`, `15m`, `1h` or `1h30m`;
    /// at least `10s`, or `0s` to sync once. Default `1h`.
    #[serde(default = "default_refresh_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"), length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) == duration('0s') || duration(self) >= duration('10s')").message("refreshInterval must be at least 10s, or 0s to sync once"))]
    pub refresh_interval: String,

    /// `true` stops every Key Vault call and every write; the Secret is left as it is.
    #[serde(default)]
    pub suspend: bool,

    /// One entry per key of the Kubernetes Secret.
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub data: Vec<DataEntry>,

    /// The Kubernetes Secret to write.
    #[serde(default)]
    pub target: TargetSpec,

    /// Workloads of this namespace restarted (as `kubectl rollout restart` does: their pod
    /// template annotation `vaultsync.io/restartedAt`) when a sync changes the Secret's
    /// data, so that pods reading it as environment variables get the new value. Never on
    /// the first sync, never when equal data is written again. Needs an operator run with
    /// `--allow-rollout-restarts`; without it the `RolloutRestarts` condition says so and
    /// nothing is patched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"]))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// A workload of the VaultSecret's namespace to restart when the Secret's data changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (group `apps`).
    pub kind: RolloutKind,
    /// Name of the workload, in the VaultSecret's namespace.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
}

/// The kinds of workload a rollout restart can name (all of group `apps`, version `v1`).
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl RolloutKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutKind::Deployment => "Deployment",
            RolloutKind::StatefulSet => "StatefulSet",
            RolloutKind::DaemonSet => "DaemonSet",
        }
    }
}

impl std::fmt::Display for RolloutRestartTarget {
    /// `Kind/name`, as Events and conditions name a target.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

pub fn default_refresh_interval() -> String {
    "1h".to_owned()
}

/// Who reads Key Vault: exactly one of the two fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.serviceAccountName) != has(self.managedIdentityClientId)").message("identity: set exactly one of serviceAccountName and managedIdentityClientId"))]
pub struct IdentitySpec {
    /// A ServiceAccount of this VaultSecret's namespace, federated with an Entra
    /// identity (workload identity); client and tenant id come from its annotations
    /// `azure.workload.identity/client-id` and `azure.workload.identity/tenant-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub service_account_name: Option<String>,

    /// Client id of a user-assigned managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub managed_identity_client_id: Option<String>,
}

/// One key of the Secret and where its value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataEntry {
    /// Key in the Kubernetes Secret's data (letters, digits, `-`, `_`, `.`).
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub key: String,
    /// The Key Vault secret.
    pub remote_ref: RemoteRef,
}

/// A Key Vault secret, optionally one version of it and one field of its JSON value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.certificate) || (!has(self.property) && (!has(self.decoding) || self.decoding == 'None'))").message("remoteRef.certificate reads the whole value of a certificate's secret (PFX or PEM): leave remoteRef.property unset and remoteRef.decoding None"))]
pub struct RemoteRef {
    /// Key Vault secret name: 1-127 letters, digits and `-`.
    #[schemars(regex(pattern = r"^[0-9a-zA-Z-]{1,127}$"))]
    pub name: String,
    /// A pinned version (32 lowercase hex characters). Pinned versions are immutable, so
    /// they are not read again once synced. Empty or omitted: the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9a-f]{32})?$"))]
    pub version: Option<String>,
    /// Take one field of a JSON value instead of the whole value: a top-level key of a
    /// JSON object (dots are part of the key), or, starting with `/`, an RFC 6901 JSON
    /// Pointer (e.g. `/db/port`). A string gives its text, any other JSON value its exact
    /// source text; `null` or absent is `PropertyNotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub property: Option<String>,
    /// How the value is encoded in Key Vault: `None` (as is) or `Base64` (standard or
    /// URL-safe alphabet, padding optional, whitespace ignored; decoded after `property`).
    #[serde(default)]
    pub decoding: Decoding,
    /// Read the value as a certificate with its private key, as Key Vault keeps a
    /// certificate's backing secret: PFX (`contentType: application/x-pkcs12`, Base64 of a
    /// password-less PKCS#12 archive) or PEM (`application/x-pem-file`; without a content
    /// type, PEM when the value holds a `-----BEGIN` line, else PFX). Writes one part of it
    /// as PEM: `Chain` (for `tls.crt`: the leaf, then its issuers found in the value,
    /// nearest first), `PrivateKey` (for `tls.key`: PKCS#8), `Issuers` (for `ca.crt`: the
    /// chain without the leaf) or `Leaf`. The leaf is the certificate of the private key.
    /// Needs `property` unset and `decoding: None`. A value that is none of this is
    /// `CertificateInvalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificatePart>,
}

impl RemoteRef {
    /// The pinned version, treating `""` like absent.
    pub fn pinned_version(&self) -> Option<&str> {
        self.version.as_deref().filter(|v| !v.is_empty())
    }
}

/// The part of a certificate value a `remoteRef.certificate` entry writes, as PEM.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificatePart {
    /// The leaf certificate, then its issuers found in the value, nearest first
    /// (`tls.crt`). Certificates that are not in the leaf's chain are left out.
    Chain,
    /// The leaf certificate alone.
    Leaf,
    /// The leaf's private key as PKCS#8 (`-----BEGIN PRIVATE KEY-----`, `tls.key`); PKCS#1
    /// and SEC1 keys are re-encoded.
    PrivateKey,
    /// The leaf's issuers found in the value, nearest first (`ca.crt`); at least one.
    Issuers,
}

/// How a Key Vault value is decoded before it is written.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Decoding {
    #[default]
    None,
    Base64,
}

/// The Kubernetes Secret the operator writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the Secret. Default: the VaultSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub name: Option<String>,
    /// Secret type, e.g. `Opaque` (default) or `kubernetes.io/tls`. Not
    /// `kubernetes.io/service-account-token` (the token controller would fill it with a
    /// non-expiring ServiceAccount token) nor `bootstrap.kubernetes.io/token` (a credential
    /// that joins nodes to the cluster).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("!(self in ['kubernetes.io/service-account-token', 'bootstrap.kubernetes.io/token'])").message("target.type may not be kubernetes.io/service-account-token or bootstrap.kubernetes.io/token: the cluster fills or trusts those Secrets as credentials"))]
    pub type_: Option<String>,
    /// Labels copied onto the Secret; keys under `vaultsync.io/` are the operator's marks
    /// and are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('vaultsync.io/'))").message("target.labels may not use the vaultsync.io/ prefix: those keys are the operator's marks"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations copied onto the Secret; keys under `vaultsync.io/` are the operator's
    /// marks and are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('vaultsync.io/'))").message("target.annotations may not use the vaultsync.io/ prefix: those keys are the operator's marks"))]
    pub annotations: BTreeMap<String, String>,
    /// `Owner` (default): the Secret is owned by this VaultSecret and deleted with it; an
    /// existing Secret it does not own is never touched. `Merge`: only this VaultSecret's
    /// keys are written, without taking keys other writers own, into a Secret it creates or
    /// whose annotation `vaultsync.io/merge-from` names this VaultSecret; the Secret
    /// survives the VaultSecret. `Orphan`: the Secret is written without an owner and
    /// survives the VaultSecret.
    #[serde(default)]
    pub creation_policy: CreationPolicy,
}

/// Who owns the Secret; see `target.creationPolicy`.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum CreationPolicy {
    #[default]
    Owner,
    Merge,
    Orphan,
}

/// What the operator last observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecretStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True only when the Secret holds every key, as of `observedGeneration`
    /// (it stays True when a later refresh fails). `Refreshed`: whether the last read of
    /// Key Vault and write of the Secret succeeded; False with the failure's reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The last successful read of Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Key Vault version id per Secret key (never values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced_versions: BTreeMap<String, String>,
    /// The last value of the `vaultsync.io/refresh` annotation acted on (one Key Vault
    /// read per new value, remembered across operator restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_request: Option<String>,
    /// The data-hash mark (as on the Secret) of the data `spec.rolloutRestartTargets`
    /// were last restarted for, or first synced with: a restart is due while the Secret's
    /// data hashes otherwise. Kept only while the spec names targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_data_hash: Option<String>,
    /// The earliest expiry among the synced versions (Key Vault `attributes.exp`, and for
    /// `remoteRef.certificate` entries the leaf certificate's `notAfter`); absent when none
    /// has one. The `Expiring` condition says when it is near.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Expiry of the synced version per Secret key, for the keys whose version has one:
    /// Key Vault `attributes.exp`, or for a `remoteRef.certificate` entry the leaf's
    /// `notAfter` when that is earlier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced_expiries: BTreeMap<String, Time>,
}

impl VaultSecret {
    /// The Secret this VaultSecret writes.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }

    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.ready_condition()
    }
}

impl VaultSecretStatus {
    /// The `Ready` condition, if this status has one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.condition(READY)
    }

    /// The `Refreshed` condition, if this status has one.
    pub fn refreshed_condition(&self) -> Option<&Condition> {
        self.condition(REFRESHED)
    }

    /// The condition of type `type_`, if this status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
