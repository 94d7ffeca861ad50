//! `vaultsync convert`: SecretProviderClass manifests of the Secrets Store CSI driver's
//! Azure provider turned into equivalent VaultSecret manifests, so that a workload can move
//! off the CSI driver without writing its VaultSecrets by hand.
//!
//! The input is the provider's documented SecretProviderClass shape
//! (`secrets-store.csi.x-k8s.io/v1`, `spec.provider: azure`, `spec.parameters` all strings,
//! `parameters.objects` a YAML string holding `array:`, a list of YAML strings, one per
//! object). Every parameter and object field either has an equivalent in the output or is
//! named in a `#` comment above the manifest; nothing is dropped in silence. An input that
//! cannot be converted faithfully (another provider, an unknown cloud, an object the
//! Secret names but the class does not declare) is an error naming the class and the field.

use crate::api::{
    CertificatePart, DataEntry, Decoding, IdentitySpec, RemoteRef, TargetSpec, VaultSecret,
    VaultSecretSpec, default_refresh_interval,
};
use kube::api::ObjectMeta;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One converted SecretProviderClass object: a VaultSecret and the notes to print above it.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Lines printed as `# ` comments before the manifest: what differs, what has no
    /// equivalent, what the user must still do.
    pub notes: Vec<String>,
    pub manifest: VaultSecret,
}

/// Why a document could not be converted; the message names the class and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(String);

/// Parameters the conversion reads; any other is listed as having no equivalent.
const KNOWN_PARAMETERS: &[&str] = &[
    "usePodIdentity",
    "useVMManagedIdentity",
    "userAssignedIdentityID",
    "clientID",
    "keyvaultName",
    "cloudName",
    "objects",
    "tenantId",
];

/// Object fields the conversion reads; any other is listed as having no equivalent.
const KNOWN_OBJECT_FIELDS: &[&str] = &[
    "objectName",
    "objectType",
    "objectVersion",
    "objectAlias",
    "objectEncoding",
    "objectFormat",
    "objectVersionHistory",
    "filePermission",
];

/// The Key Vault DNS suffix of a `cloudName` as the Azure provider spells it (matched
/// without regard to case; empty is the public cloud). Suffixes from Microsoft's "Azure
/// Key Vault DNS suffixes" list, the same set the operator calls
/// (`crate::source::vault_url`).
fn vault_suffix(cloud_name: &str) -> Option<&'static str> {
    match cloud_name.to_ascii_lowercase().as_str() {
        "" | "azurepubliccloud" => Some("vault.azure.net"),
        "azureusgovernmentcloud" => Some("vault.usgovcloudapi.net"),
        "azurechinacloud" => Some("vault.azure.cn"),
        "azuregermancloud" => Some("vault.microsoftazure.de"),
        _ => None,
    }
}

/// Converts every document of a YAML stream (`---` separated). Documents that are not a
/// SecretProviderClass are skipped with a note on the first output (or, if no class is
/// found, an error), so a file holding the class beside its pods converts as it is.
///
/// Errors: the YAML does not parse, or a class cannot be converted (see the module docs).
pub fn convert_stream(source: &str, origin: &str) -> Result<Vec<Converted>, ConvertError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(source)
        .map_err(|e| ConvertError(format!("{origin}: not YAML: {e}")))?;
    let mut skipped = Vec::new();
    let mut out = Vec::new();
    for document in documents.iter().filter(|d| !d.is_null()) {
        let kind = document["kind"].as_str().unwrap_or("");
        let group = document["apiVersion"]
            .as_str()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        if kind != "SecretProviderClass" || group != "secrets-store.csi.x-k8s.io" {
            let name = document["metadata"]["name"].as_str().unwrap_or("(unnamed)");
            skipped.push(format!(
                "{origin}: skipped {} '{name}': not a SecretProviderClass",
                if kind.is_empty() { "a document" } else { kind }
            ));
            continue;
        }
        out.extend(convert_class(document)?);
    }
    match out.first_mut() {
        Some(first) => {
            first.notes.splice(0..0, skipped);
            Ok(out)
        }
        None => Err(ConvertError(format!(
            "{origin}: no SecretProviderClass (secrets-store.csi.x-k8s.io) found"
        ))),
    }
}

/// A string field of a JSON object, `""` when absent; numbers and booleans (YAML
/// authors often leave `"true"` unquoted) as their text.
fn text(value: &Value, field: &str) -> String {
    match &value[field] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One object of `parameters.objects`, with the name it is mounted (and keyed) under.
struct CsiObject {
    fields: Value,
    /// `objectAlias`, else `objectName`: the file name the CSI driver wrote.
    file_name: String,
}

fn parse_objects(class: &str, objects: &str) -> Result<Vec<CsiObject>, ConvertError> {
    if objects.trim().is_empty() {
        return Ok(Vec::new());
    }
    let outer: Value = serde_saphyr::from_str(objects).map_err(|e| {
        ConvertError(format!(
            "SecretProviderClass '{class}': parameters.objects is not YAML: {e}"
        ))
    })?;
    let Some(array) = outer["array"].as_array() else {
        return Err(ConvertError(format!(
            "SecretProviderClass '{class}': parameters.objects must hold `array:`, a list of objects"
        )));
    };
    array
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // Each item is itself a YAML string in the documented form; a mapping written
            // inline is accepted too.
            let fields: Value = match item {
                Value::String(s) => serde_saphyr::from_str(s).map_err(|e| {
                    ConvertError(format!(
                        "SecretProviderClass '{class}': parameters.objects array[{i}] is not YAML: {e}"
                    ))
                })?,
                other => other.clone(),
            };
            let name = text(&fields, "objectName");
            if name.is_empty() {
                return Err(ConvertError(format!(
                    "SecretProviderClass '{class}': parameters.objects array[{i}] has no objectName"
                )));
            }
            let alias = text(&fields, "objectAlias");
            let file_name = if alias.is_empty() { name } else { alias };
            Ok(CsiObject { fields, file_name })
        })
        .collect()
}

/// The certificate part a key of a `kubernetes.io/tls` secretObject takes from a
/// certificate's secret: the CSI driver split the secret's PEM (key and chain) into
/// `tls.key` and `tls.crt`; `ca.crt` is taken as the issuers.
fn tls_part(key: &str) -> Option<CertificatePart> {
    match key {
        "tls.crt" => Some(CertificatePart::Chain),
        "tls.key" => Some(CertificatePart::PrivateKey),
        "ca.crt" => Some(CertificatePart::Issuers),
        _ => None,
    }
}

/// The data entry for one object under `key`, or the note saying why there is none; notes
/// for fields with no exact equivalent are pushed to `notes`. `tls`: the key belongs to a
/// secretObject of type `kubernetes.io/tls`.
fn entry_for(
    object: &CsiObject,
    key: &str,
    tls: bool,
    notes: &mut Vec<String>,
) -> Result<DataEntry, String> {
    let f = &object.fields;
    let name = text(f, "objectName");
    let object_type = text(f, "objectType");
    let version = text(f, "objectVersion");
    let version = (!version.is_empty()).then_some(version);
    let certificate_entry = |part: CertificatePart| DataEntry {
        key: key.to_owned(),
        remote_ref: RemoteRef {
            name: name.clone(),
            version: version.clone(),
            property: None,
            decoding: Decoding::None,
            certificate: Some(part),
        },
    };
    match object_type.to_ascii_lowercase().as_str() {
        "secret" | "" => {
            let format = text(f, "objectFormat");
            if let Some(part) = tls
                .then(|| tls_part(key))
                .flatten()
                .filter(|_| !format.eq_ignore_ascii_case("pfx"))
            {
                notes.push(format!(
                    "object '{name}': key '{key}' of the kubernetes.io/tls Secret is read from the certificate's secret as certificate: {part:?} (PEM), as the CSI driver split it"
                ));
                return Ok(certificate_entry(part));
            }
        }
        "cert" => {
            // The CSI driver wrote the certificate's public part, the leaf, as PEM. Key
            // Vault keeps it, with the key, in the secret of the same name.
            let part = match (tls, key) {
                (true, "tls.crt") => CertificatePart::Chain,
                _ => CertificatePart::Leaf,
            };
            notes.push(format!(
                "object '{name}' (objectType cert): read from the certificate's secret '{name}' as certificate: {part:?}; the identity needs secrets get on it (the CSI driver needed certificates get)"
            ));
            return Ok(certificate_entry(part));
        }
        "key" => {
            return Err(format!(
                "object '{name}' (objectType key: a Key Vault key's public part) has no equivalent; vaultsync syncs secrets; not converted"
            ));
        }
        other => {
            return Err(format!(
                "object '{name}' has objectType '{other}', unknown; not converted"
            ));
        }
    }
    let decoding = match text(f, "objectEncoding").to_ascii_lowercase().as_str() {
        "" | "utf-8" | "utf8" => Decoding::None,
        "base64" => Decoding::Base64,
        other => {
            return Err(format!(
                "object '{name}' has objectEncoding '{other}', which vaultsync cannot decode (only base64); not converted"
            ));
        }
    };
    let format = text(f, "objectFormat");
    if !format.is_empty() {
        notes.push(format!(
            "object '{name}': objectFormat '{format}' applies to certificates; the secret is synced as Key Vault stores it"
        ));
    }
    let history = text(f, "objectVersionHistory");
    if !matches!(history.as_str(), "" | "0" | "1") {
        notes.push(format!(
            "object '{name}': objectVersionHistory {history} has no equivalent; only the current (or pinned) version is synced"
        ));
    }
    let permission = text(f, "filePermission");
    if !permission.is_empty() {
        notes.push(format!(
            "object '{name}': filePermission {permission}: set defaultMode (or items[].mode) on the pod's Secret volume"
        ));
    }
    if let Some(map) = f.as_object() {
        for field in map
            .keys()
            .filter(|k| !KNOWN_OBJECT_FIELDS.contains(&k.as_str()))
        {
            notes.push(format!("object '{name}': field {field} has no equivalent"));
        }
    }
    Ok(DataEntry {
        key: key.to_owned(),
        remote_ref: RemoteRef {
            name,
            version,
            property: None,
            decoding,
            certificate: None,
        },
    })
}

/// The identity the class used, as a VaultSecret identity, with notes.
fn identity_of(parameters: &Value, notes: &mut Vec<String>) -> Option<IdentitySpec> {
    let flag = |name: &str| text(parameters, name).eq_ignore_ascii_case("true");
    let user_assigned = text(parameters, "userAssignedIdentityID");
    let client_id = text(parameters, "clientID");
    let tenant = text(parameters, "tenantId");
    if !tenant.is_empty() {
        notes.push(format!(
            "tenantId {tenant}: a managed identity needs none; for workload identity it comes from the ServiceAccount's azure.workload.identity/tenant-id annotation or the operator's --default-tenant-id"
        ));
    }
    if flag("usePodIdentity") {
        notes.push(
            "usePodIdentity: AAD Pod Identity has no equivalent (it is retired); use workload identity: set spec.identity.serviceAccountName".to_owned(),
        );
    }
    if !client_id.is_empty() {
        notes.push(format!(
            "clientID {client_id} (workload identity): set spec.identity.serviceAccountName to a ServiceAccount of this namespace annotated azure.workload.identity/client-id: {client_id}; the placeholder below is refused by the API server until then"
        ));
        return Some(IdentitySpec {
            service_account_name: Some("SET-ServiceAccount-federated-with-clientID".to_owned()),
            managed_identity_client_id: None,
        });
    }
    if flag("useVMManagedIdentity") {
        if !user_assigned.is_empty() {
            return Some(IdentitySpec {
                service_account_name: None,
                managed_identity_client_id: Some(user_assigned),
            });
        }
        notes.push(
            "useVMManagedIdentity without userAssignedIdentityID (the node's system-assigned identity): spec.identity is left out, so the operator's own identity reads Key Vault where the namespace allows it (vaultsync.io/operator-identity); prefer a user-assigned identity or workload identity".to_owned(),
        );
        return None;
    }
    if !user_assigned.is_empty() {
        notes.push(format!(
            "userAssignedIdentityID {user_assigned} is ignored by the CSI driver unless useVMManagedIdentity is true; not used"
        ));
    }
    if !flag("usePodIdentity") {
        notes.push(
            "no identity parameter: the CSI driver used a service principal's client secret from nodePublishSecretRef, which vaultsync does not support (no stored credentials); set spec.identity".to_owned(),
        );
    }
    None
}

fn convert_class(document: &Value) -> Result<Vec<Converted>, ConvertError> {
    let class = document["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let error = |message: String| ConvertError(format!("SecretProviderClass '{class}': {message}"));
    if class.is_empty() {
        return Err(ConvertError(
            "a SecretProviderClass has no metadata.name".to_owned(),
        ));
    }
    let namespace = document["metadata"]["namespace"]
        .as_str()
        .map(str::to_owned);
    let spec = &document["spec"];
    let provider = text(spec, "provider");
    if !provider.eq_ignore_ascii_case("azure") {
        return Err(error(format!(
            "spec.provider is '{provider}'; only the azure provider's classes convert"
        )));
    }
    let parameters = &spec["parameters"];
    let vault_name = text(parameters, "keyvaultName");
    if vault_name.is_empty() {
        return Err(error("parameters.keyvaultName is missing".to_owned()));
    }
    let cloud = text(parameters, "cloudName");
    let suffix = vault_suffix(&cloud).ok_or_else(|| {
        error(format!(
            "parameters.cloudName '{cloud}' has no known Key Vault DNS suffix (AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud); write spec.vaultUrl by hand"
        ))
    })?;
    let vault_url = format!("https://{vault_name}.{suffix}");

    let mut common_notes = vec![format!(
        "converted from SecretProviderClass '{class}' by `vaultsync convert`"
    )];
    let identity = identity_of(parameters, &mut common_notes);
    if let Some(map) = parameters.as_object() {
        for (name, value) in map
            .iter()
            .filter(|(k, _)| !KNOWN_PARAMETERS.contains(&k.as_str()))
        {
            common_notes.push(format!(
                "parameter {name}: {value} has no equivalent; not used"
            ));
        }
    }
    if let Some(map) = spec.as_object() {
        for field in map
            .keys()
            .filter(|k| !matches!(k.as_str(), "provider" | "parameters" | "secretObjects"))
        {
            common_notes.push(format!("spec.{field} has no equivalent; not used"));
        }
    }
    let objects = parse_objects(&class, &text(parameters, "objects"))?;
    let by_file_name: BTreeMap<&str, &CsiObject> =
        objects.iter().map(|o| (o.file_name.as_str(), o)).collect();

    let make = |name: String, target: TargetSpec, data: Vec<DataEntry>, notes: Vec<String>| {
        let mut manifest = VaultSecret::new(
            &name,
            VaultSecretSpec {
                vault_url: vault_url.clone(),
                identity: identity.clone(),
                refresh_interval: default_refresh_interval(),
                suspend: false,
                data,
                target,
                rollout_restart_targets: Vec::new(),
            },
        );
        manifest.metadata = ObjectMeta {
            name: Some(name),
            namespace: namespace.clone(),
            ..ObjectMeta::default()
        };
        Converted { notes, manifest }
    };

    let mut out = Vec::new();
    let mut referenced = BTreeSet::new();
    let secret_objects = spec["secretObjects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, secret_object) in secret_objects.iter().enumerate() {
        let secret_name = text(secret_object, "secretName");
        if secret_name.is_empty() {
            return Err(error(format!("secretObjects[{i}] has no secretName")));
        }
        let mut notes = common_notes.clone();
        notes.push(format!(
            "secretObjects[{i}]: the CSI driver wrote Secret '{secret_name}' only while a pod mounted the class; vaultsync keeps it whether or not a pod runs"
        ));
        let tls = text(secret_object, "type") == "kubernetes.io/tls";
        let mut data = Vec::new();
        for (j, item) in secret_object["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let object_name = text(item, "objectName");
            let key = text(item, "key");
            let object = by_file_name.get(object_name.as_str()).ok_or_else(|| {
                error(format!(
                    "secretObjects[{i}].data[{j}].objectName '{object_name}' names no object of parameters.objects (by objectAlias or objectName)"
                ))
            })?;
            referenced.insert(object.file_name.clone());
            match entry_for(object, &key, tls, &mut notes) {
                Ok(entry) => data.push(entry),
                Err(note) => notes.push(note),
            }
        }
        let labels = string_map(&secret_object["labels"]);
        let annotations = string_map(&secret_object["annotations"]);
        let type_ = Some(text(secret_object, "type")).filter(|t| !t.is_empty());
        let target = TargetSpec {
            name: Some(secret_name.clone()),
            type_,
            labels,
            annotations,
            ..TargetSpec::default()
        };
        if data.is_empty() {
            notes.push("no entry could be converted: this manifest is refused by the API server (data needs at least one entry) until one is added".to_owned());
        }
        out.push(make(secret_name, target, data, notes));
    }

    // Objects only mounted as files: one Secret named after the class, keyed by the file
    // names, so that mounting it as a volume gives the pod the same files.
    let mounted_only: Vec<&CsiObject> = objects
        .iter()
        .filter(|o| !referenced.contains(&o.file_name))
        .collect();
    if !mounted_only.is_empty() {
        let mut notes = common_notes.clone();
        notes.push(format!(
            "the CSI driver mounted these objects as files; mount Secret '{class}' as a volume (secret.secretName: {class}) at the same mountPath for the same file names, or read them as environment variables"
        ));
        let mut data = Vec::new();
        for object in mounted_only {
            match entry_for(object, &object.file_name, false, &mut notes) {
                Ok(entry) => data.push(entry),
                Err(note) => notes.push(note),
            }
        }
        if data.is_empty() {
            notes.push("no entry could be converted: this manifest is refused by the API server (data needs at least one entry) until one is added".to_owned());
        }
        let target = TargetSpec {
            name: Some(class.clone()),
            ..TargetSpec::default()
        };
        out.push(make(class.clone(), target, data, notes));
    }
    if out.is_empty() {
        return Err(error(
            "declares no objects (parameters.objects) and no secretObjects: nothing to convert"
                .to_owned(),
        ));
    }
    Ok(out)
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The converted manifests as one YAML stream: each document its notes as `# ` comments,
/// then the manifest; documents separated by `---`.
///
/// Errors: a manifest fails to serialize (not expected for these types).
pub fn render(converted: &[Converted]) -> Result<String, ConvertError> {
    let mut out = String::new();
    for (i, c) in converted.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        for note in &c.notes {
            out.push_str("# ");
            out.push_str(note);
            out.push('\n');
        }
        let yaml = serde_saphyr::to_string(&c.manifest)
            .map_err(|e| ConvertError(format!("cannot write YAML: {e}")))?;
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(parameters: &str, secret_objects: &str) -> String {
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: spc\n  namespace: team-a\nspec:\n  provider: azure\n  parameters:\n{parameters}{secret_objects}"
        )
    }

    const OBJECTS: &str = "    keyvaultName: kv1\n    objects: |\n      array:\n        - |\n          objectName: db-password\n          objectType: secret\n          objectAlias: DB_PASSWORD\n        - |\n          objectName: tls-pfx\n          objectType: secret\n          objectVersion: 0123456789abcdef0123456789abcdef\n          objectEncoding: base64\n          objectFormat: pfx\n";

    fn notes(c: &Converted) -> String {
        c.notes.join("\n")
    }

    #[test]
    fn secret_objects_become_targets_with_their_keys_type_and_labels() {
        let source = class(
            &format!("    clientID: 11111111-2222-3333-4444-555555555555\n{OBJECTS}"),
            "  secretObjects:\n  - secretName: app-tls\n    type: kubernetes.io/tls\n    labels:\n      app: web\n    data:\n    - objectName: tls-pfx\n      key: tls.pfx\n    - objectName: DB_PASSWORD\n      key: password\n",
        );
        let out = convert_stream(&source, "t").unwrap();
        assert_eq!(
            out.len(),
            1,
            "every object is referenced: no mounted-only Secret"
        );
        let vs = &out[0].manifest;
        assert_eq!(vs.metadata.name.as_deref(), Some("app-tls"));
        assert_eq!(vs.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(vs.spec.vault_url, "https://kv1.vault.azure.net");
        assert_eq!(vs.spec.target.name.as_deref(), Some("app-tls"));
        assert_eq!(vs.spec.target.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(vs.spec.target.labels["app"], "web");
        let keys: Vec<_> = vs.spec.data.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["tls.pfx", "password"]);
        let pfx = &vs.spec.data[0].remote_ref;
        assert_eq!(pfx.name, "tls-pfx");
        assert_eq!(
            pfx.version.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(pfx.decoding, Decoding::Base64);
        assert_eq!(vs.spec.data[1].remote_ref.name, "db-password");
        // Workload identity: a placeholder the API server refuses, and a note saying why.
        let sa = vs
            .spec
            .identity
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref()
            .unwrap();
        assert!(sa.chars().any(|c| c.is_ascii_uppercase()), "{sa}");
        assert!(
            notes(&out[0]).contains(
                "azure.workload.identity/client-id: 11111111-2222-3333-4444-555555555555"
            )
        );
        assert!(notes(&out[0]).contains("objectFormat 'pfx'"));
    }

    #[test]
    fn objects_only_mounted_become_a_secret_named_after_the_class() {
        let source = class(
            &format!(
                "    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: a87c1e0f-ca8e-4064-abbf-b2749c333d65\n{OBJECTS}"
            ),
            "  secretObjects:\n  - secretName: db\n    type: Opaque\n    data:\n    - objectName: DB_PASSWORD\n      key: password\n",
        );
        let out = convert_stream(&source, "t").unwrap();
        assert_eq!(out.len(), 2);
        let mounted = &out[1].manifest;
        assert_eq!(mounted.metadata.name.as_deref(), Some("spc"));
        let keys: Vec<_> = mounted.spec.data.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["tls-pfx"], "keyed by the file name the driver wrote");
        let identity = mounted.spec.identity.as_ref().unwrap();
        assert_eq!(
            identity.managed_identity_client_id.as_deref(),
            Some("a87c1e0f-ca8e-4064-abbf-b2749c333d65")
        );
        assert!(notes(&out[1]).contains("mount Secret 'spc' as a volume"));
    }

    #[test]
    fn clouds_give_their_vault_suffix_and_an_unknown_cloud_is_an_error() {
        for (cloud, host) in [
            ("AzurePublicCloud", "kv1.vault.azure.net"),
            ("azureusgovernmentcloud", "kv1.vault.usgovcloudapi.net"),
            ("AzureChinaCloud", "kv1.vault.azure.cn"),
            ("AzureGermanCloud", "kv1.vault.microsoftazure.de"),
        ] {
            let source = class(&format!("    cloudName: {cloud}\n{OBJECTS}"), "");
            let out = convert_stream(&source, "t").unwrap();
            assert_eq!(out[0].manifest.spec.vault_url, format!("https://{host}"));
        }
        let source = class(&format!("    cloudName: AzureStackCloud\n{OBJECTS}"), "");
        let error = convert_stream(&source, "t").unwrap_err().to_string();
        assert!(error.contains("cloudName 'AzureStackCloud'"), "{error}");
        assert!(error.contains("SecretProviderClass 'spc'"), "{error}");
    }

    #[test]
    fn nothing_without_an_equivalent_is_dropped_in_silence() {
        let objects = "    keyvaultName: kv1\n    cloudEnvFileName: /etc/azure.json\n    objects: |\n      array:\n        - |\n          objectName: signing\n          objectType: key\n        - |\n          objectName: web-cert\n          objectType: cert\n        - |\n          objectName: blob\n          objectEncoding: hex\n        - |\n          objectName: history\n          objectVersionHistory: 3\n          filePermission: \"0400\"\n          someNewField: x\n";
        let out = convert_stream(&class(objects, ""), "t").unwrap();
        let notes = notes(&out[0]);
        for expected in [
            "parameter cloudEnvFileName",
            "object 'signing' (objectType key",
            "object 'web-cert' (objectType cert",
            "objectEncoding 'hex'",
            "objectVersionHistory 3",
            "filePermission 0400",
            "field someNewField",
            "nodePublishSecretRef",
        ] {
            assert!(
                notes.contains(expected),
                "{expected} missing from:\n{notes}"
            );
        }
        let keys: Vec<_> = out[0]
            .manifest
            .spec
            .data
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        assert_eq!(keys, ["web-cert", "history"]);
        let cert = &out[0].manifest.spec.data[0].remote_ref;
        assert_eq!(
            (cert.name.as_str(), cert.certificate, cert.decoding),
            ("web-cert", Some(CertificatePart::Leaf), Decoding::None)
        );
    }

    #[test]
    fn a_tls_secret_object_on_a_certificate_becomes_certificate_entries() {
        let objects = "    keyvaultName: kv1
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: a87c1e0f-ca8e-4064-abbf-b2749c333d65
    objects: |
      array:
        - |
          objectName: web-tls
          objectType: secret
          objectVersion: 0123456789abcdef0123456789abcdef
        - |
          objectName: web-root
          objectType: cert
";
        let out = convert_stream(
            &class(
                objects,
                "  secretObjects:\n  - secretName: web\n    type: kubernetes.io/tls\n    data:\n    - objectName: web-tls\n      key: tls.key\n    - objectName: web-tls\n      key: tls.crt\n    - objectName: web-tls\n      key: ca.crt\n",
            ),
            "t",
        )
        .unwrap();
        let parts: Vec<_> = out[0]
            .manifest
            .spec
            .data
            .iter()
            .map(|e| {
                let r = &e.remote_ref;
                (
                    e.key.as_str(),
                    r.name.as_str(),
                    r.certificate,
                    r.version.is_some(),
                )
            })
            .collect();
        assert_eq!(
            parts,
            [
                (
                    "tls.key",
                    "web-tls",
                    Some(CertificatePart::PrivateKey),
                    true
                ),
                ("tls.crt", "web-tls", Some(CertificatePart::Chain), true),
                ("ca.crt", "web-tls", Some(CertificatePart::Issuers), true),
            ]
        );
        assert!(
            notes(&out[0]).contains("certificate: PrivateKey (PEM), as the CSI driver split it")
        );
        // The cert object only mounted: its leaf, under its file name.
        let mounted = &out[1].manifest.spec.data[0];
        assert_eq!(
            (mounted.key.as_str(), mounted.remote_ref.certificate),
            ("web-root", Some(CertificatePart::Leaf))
        );
        assert!(notes(&out[1]).contains("the identity needs secrets get on it"));
        // A YAML round trip keeps the field.
        let back: VaultSecret = serde_saphyr::from_str(&render(&out[..1]).unwrap()).unwrap();
        assert_eq!(
            back.spec.data[1].remote_ref.certificate,
            Some(CertificatePart::Chain)
        );
    }

    #[test]
    fn bad_input_names_the_class_and_field() {
        let unknown = class(
            OBJECTS,
            "  secretObjects:\n  - secretName: s\n    data:\n    - objectName: nope\n      key: k\n",
        );
        let error = convert_stream(&unknown, "t").unwrap_err().to_string();
        assert!(
            error.contains("secretObjects[0].data[0].objectName 'nope'"),
            "{error}"
        );
        let other = class(OBJECTS, "").replace("provider: azure", "provider: vault");
        let error = convert_stream(&other, "t").unwrap_err().to_string();
        assert!(error.contains("spec.provider is 'vault'"), "{error}");
        let error = convert_stream("kind: Pod\nmetadata:\n  name: p\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("f.yaml: no SecretProviderClass"), "{error}");
        let error = convert_stream("a: [", "f.yaml").unwrap_err().to_string();
        assert!(error.starts_with("f.yaml: not YAML"), "{error}");
    }

    #[test]
    fn other_documents_are_skipped_with_a_note_and_render_keeps_the_notes() {
        let source = format!(
            "kind: Pod\napiVersion: v1\nmetadata:\n  name: busybox\n---\n{}",
            class(OBJECTS, "")
        );
        let out = convert_stream(&source, "both.yaml").unwrap();
        assert!(notes(&out[0]).contains("both.yaml: skipped Pod 'busybox'"));
        let yaml = render(&out).unwrap();
        assert!(
            yaml.starts_with("# both.yaml: skipped Pod 'busybox'"),
            "{yaml}"
        );
        let back: VaultSecret = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back.spec.data.len(), 2);
    }
}
