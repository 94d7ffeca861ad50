//! Smoke tests of the local control plane: the API server, RBAC, TokenRequest and the
//! controllers of kube-controller-manager that the operator relies on.

mod common;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Config};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test]
async fn admin_creates_a_namespace_and_a_secret() {
    let client = kube_client().await;
    let ns = TempNamespace::create(&client).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_owned(),
            ByteString(b"value".to_vec()),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let read = secrets.get("smoke").await.expect("read the Secret back");
    assert_eq!(read.data.unwrap()["key"].0, b"value");
}

#[tokio::test]
async fn a_service_account_without_rbac_is_authenticated_but_denied() {
    let admin = kube_client().await;
    let ns = TempNamespace::create(&admin).await;
    create_service_account(&admin, &ns.name, "nobody").await;
    let issuer = env("VAULTSYNC_TEST_SA_ISSUER");
    let token = service_account_token(&admin, &ns.name, "nobody", &issuer).await;

    let mut config = Config::infer().await.expect("kubeconfig");
    config.auth_info = Default::default();
    config.auth_info.token = Some(token.into());
    let as_sa = Client::try_from(config).expect("a client with the ServiceAccount token");

    let review = Api::<SelfSubjectReview>::all(as_sa.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview is open to every authenticated user");
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some(format!("system:serviceaccount:{}:nobody", ns.name).as_str())
    );

    let err = Api::<Secret>::namespaced(as_sa, &ns.name)
        .list(&Default::default())
        .await
        .expect_err("RBAC must deny");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert_eq!(status.reason, "Forbidden");
        }
        other => panic!("expected a 403 from the API server, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_collection_deletes_owned_objects() {
    let client = kube_client().await;
    let ns = TempNamespace::create(&client).await;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let owner = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = maps
        .create(&PostParams::default(), &owner)
        .await
        .expect("create the owner");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let owned = Secret {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().expect("uid"),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .expect("create the owned Secret");
    maps.delete("owner", &DeleteParams::background())
        .await
        .expect("delete the owner");

    // The bound only keeps a broken environment from hanging the suite; it asserts no speed.
    for _ in 0..240 {
        if secrets.get_opt("owned").await.expect("get").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the garbage collector did not delete the owned Secret");
}
