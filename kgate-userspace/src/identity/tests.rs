use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use http::{HeaderMap, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use kgate_common::Origin;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};
use wildmatch::WildMatch;

use super::{
    jwt::{JwtError, Keys},
    pods::{PodIndex, PodInfo},
    *,
};
use crate::config;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const POD_UID: &str = "6f1c2a34-1111-4a5b-8c9d-0123456789ab";
const OTHER_UID: &str = "7a2b3c4d-2222-4a5b-8c9d-0123456789ab";
const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Signer {
    encoding: EncodingKey,
    jwk: Value,
    kid: String,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        });
        Self {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            kid: kid.to_owned(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn keys(signers: &[&Signer]) -> Keys {
    let set: JwkSet = serde_json::from_value(
        json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}),
    )
    .unwrap();
    Keys::new(ISSUER.to_owned(), &set)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(pod_uid: Option<&str>) -> Value {
    let now = now();
    let mut k8s = json!({
        "namespace": "ci",
        "serviceaccount": {"name": "deployer", "uid": "sa-uid-1"},
    });
    if let Some(uid) = pod_uid {
        k8s["pod"] = json!({"name": "deployer-7d9f", "uid": uid});
        k8s["node"] = json!({"name": "node-1", "uid": "node-uid-1"});
    }
    json!({
        "iss": ISSUER, "aud": [ISSUER], "exp": now + 3600, "iat": now, "nbf": now,
        "sub": "system:serviceaccount:ci:deployer", "jti": "j-1", "kubernetes.io": k8s,
    })
}

#[test]
fn a_projected_token_verifies_into_the_api_servers_user() {
    let s = Signer::new("k1");
    let claims = keys(&[&s])
        .verify(&s.sign(&claims(Some(POD_UID))), &[ISSUER.into()], 60)
        .unwrap();
    let user = claims.user().unwrap();
    assert_eq!(user.username, "system:serviceaccount:ci:deployer");
    assert_eq!(user.uid, "sa-uid-1");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated"
        ]
    );
    assert_eq!(user.extra[EXTRA_POD_UID], [POD_UID]);
    assert_eq!(user.extra[EXTRA_POD_NAME], ["deployer-7d9f"]);
    assert_eq!(
        user.extra["authentication.kubernetes.io/credential-id"],
        ["JTI=j-1"]
    );
}

#[test]
fn tokens_that_must_not_verify() {
    let s = Signer::new("k1");
    let impostor = Signer::new("k1");
    let keys = keys(&[&s]);
    let aud = [ISSUER.to_owned()];
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(Some(POD_UID));
        f(&mut c);
        s.sign(&c)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 120)),
            "expired",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 600)),
            "not valid yet",
        ),
        (
            "other audience",
            with(&|c| c["aud"] = json!(["https://vault"])),
            "audience",
        ),
        (
            "other issuer",
            with(&|c| c["iss"] = json!("https://evil")),
            "issuer",
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "exp",
        ),
        (
            "forged with another key under the same kid",
            impostor.sign(&claims(Some(POD_UID))),
            "signature",
        ),
        ("garbage", "not.a.jwt".to_owned(), "not a JWT"),
    ];
    for (what, token, needle) in cases {
        let err = keys.verify(&token, &aud, 60).unwrap_err().to_string();
        assert!(err.contains(needle), "{what}: {err}");
    }
    // Within the skew an expired token still verifies, as on the API server.
    let token = with(&|c| c["exp"] = json!(now() - 10));
    assert!(keys.verify(&token, &aud, 60).is_ok());

    // Unknown kid: the caller refreshes the JWKS.
    let other = Signer::new("k2");
    assert_eq!(
        keys.verify(&other.sign(&claims(None)), &aud, 60)
            .unwrap_err(),
        JwtError::UnknownKey("k2".into())
    );

    // alg none and HMAC are never accepted.
    let payload = B64.encode(claims(None).to_string());
    for alg in ["none", "HS256"] {
        let header = B64.encode(json!({"alg": alg, "kid": "k1"}).to_string());
        let token = format!("{header}.{payload}.{}", B64.encode("sig"));
        let err = keys.verify(&token, &aud, 60).unwrap_err();
        assert!(
            matches!(err, JwtError::Algorithm(_) | JwtError::Malformed(_)),
            "{alg}: {err}"
        );
    }
}

#[test]
fn claims_must_be_a_service_accounts() {
    let s = Signer::new("k1");
    let keys = keys(&[&s]);
    let mut c = claims(None);
    c["sub"] = json!("system:serviceaccount:kube-system:admin");
    let claims = keys.verify(&s.sign(&c), &[ISSUER.into()], 60).unwrap();
    assert!(claims.user().unwrap_err().to_string().contains("sub"));
}

/// The agent's own token names the API server's audiences (one or several, a string
/// or a list); a static token or a file of junk names none.
#[test]
fn the_api_audiences_are_read_from_the_agents_own_token() {
    let s = Signer::new("k1");
    let dir = std::env::temp_dir().join(format!("kgate-aud-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut c = claims(None);
    c["aud"] = json!(["https://kubernetes.default.svc", "sts.amazonaws.com"]);
    let many = file("many", &format!("{}\n", s.sign(&c)));
    c["aud"] = json!("https://kubernetes.default.svc");
    let one = file("one", &s.sign(&c));
    assert_eq!(
        api_audiences_of_token_file(&many),
        Some(vec![
            "https://kubernetes.default.svc".into(),
            "sts.amazonaws.com".into()
        ])
    );
    assert_eq!(
        api_audiences_of_token_file(&one),
        Some(vec!["https://kubernetes.default.svc".into()])
    );
    for (name, text) in [
        ("static", "admin-0123456789abcdef"),
        ("empty", ""),
        ("dots", "a.b.c"),
    ] {
        assert_eq!(
            api_audiences_of_token_file(&file(name, text)),
            None,
            "{name}"
        );
    }
    assert_eq!(api_audiences_of_token_file(&dir.join("missing")), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn pod(uid: &str, name: &str) -> Arc<PodInfo> {
    Arc::new(PodInfo {
        namespace: "ci".into(),
        name: name.into(),
        uid: uid.into(),
        service_account: "deployer".into(),
        labels: Default::default(),
        containers: vec![("app".into(), Some(CONTAINER_ID.into()))],
    })
}

fn user(pod_uid: Option<&str>) -> UserInfo {
    let s = Signer::new("k1");
    keys(&[&s])
        .verify(&s.sign(&claims(pod_uid)), &[ISSUER.into()], 60)
        .unwrap()
        .user()
        .unwrap()
}

#[test]
fn binding_rules() {
    let bound = Arc::new(user(Some(POD_UID)));
    let unbound = Arc::new(user(None));
    let own = Workload::Pod {
        pod: pod(POD_UID, "deployer-7d9f"),
        container: None,
    };
    let other = Workload::Pod {
        pod: pod(OTHER_UID, "web-0"),
        container: None,
    };
    let host = Workload::Host {
        cgroup: Some("/system.slice/cron.service".into()),
    };
    let none: Vec<WildMatch> = vec![];
    let ci = vec![WildMatch::new("system:serviceaccount:ci:*")];

    assert!(check_binding(&bound, &own, &none).is_ok());
    let refusal = check_binding(&bound, &other, &none).unwrap_err();
    // The refusal carries the verified user and both pods.
    let Unidentified::StolenToken {
        user: who,
        token_pod,
        workload,
    } = &refusal
    else {
        panic!("a stolen token: {refusal:?}")
    };
    assert_eq!(who.username, "system:serviceaccount:ci:deployer");
    assert_eq!(
        token_pod,
        &BoundPod {
            namespace: "ci".into(),
            name: "deployer-7d9f".into(),
            uid: POD_UID.into(),
        }
    );
    assert_eq!(workload.describe(), "pod ci/web-0");
    let stolen = refusal.status();
    assert_eq!(stolen.http_status(), StatusCode::FORBIDDEN);
    assert_eq!(
        stolen.message,
        format!(
            "kgate: token bound to pod ci/deployer-7d9f ({POD_UID}) used from pod ci/web-0 ({OTHER_UID})"
        )
    );
    let from_host = check_binding(&bound, &host, &ci).unwrap_err();
    assert!(matches!(from_host, Unidentified::StolenToken { .. }));
    let from_host = from_host.status();
    assert!(
        from_host.message.contains("outside any pod") && from_host.message.contains("cron"),
        "{}",
        from_host.message
    );
    assert!(matches!(
        check_binding(&bound, &Workload::Unattributed, &ci),
        Err(Unidentified::StolenToken { .. })
    ));

    let refused = check_binding(&unbound, &own, &none).unwrap_err();
    assert!(
        matches!(refused, Unidentified::Unbound { .. }),
        "{refused:?}"
    );
    let refused = refused.status();
    assert!(
        refused.message.contains("unboundSubjects"),
        "{}",
        refused.message
    );
    assert!(check_binding(&unbound, &other, &ci).is_ok());
    assert!(check_binding(&unbound, &Workload::Unattributed, &ci).is_ok());
    let narrow = vec![WildMatch::new("system:serviceaccount:ci:tester")];
    assert!(check_binding(&unbound, &own, &narrow).is_err());
}

fn identifier(signer: &Signer, pods: Option<PodIndex>) -> Identifier {
    let cfg = config::Identity {
        unbound_subjects: vec!["kubernetes-admin".into()],
        impersonate: vec!["system:serviceaccount:ci:*".into()],
        ..Default::default()
    };
    Identifier::new(&cfg, None, pods).with_keys(keys(&[signer]))
}

fn connection(cgroup: Option<&str>) -> Connection {
    let origin = Origin {
        cgroup_id: 42,
        netns_cookie: 1,
        socket_cookie: 2,
        pid_tgid: (4242_u64 << 32) | 4242,
        dst_addr: [0; 4],
        dst_port: 443,
        family: 2,
        _pad: 0,
        comm: *b"kubectl\0\0\0\0\0\0\0\0\0",
    };
    Connection {
        peer: SocketAddr::from(([10, 0, 0, 2], 40000)),
        origin: Some(origin),
        cgroup: cgroup.map(str::to_owned),
        exe: None,
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

#[tokio::test]
async fn identify_binds_the_token_to_the_kernels_pod() {
    let s = Signer::new("k1");
    let index = PodIndex::fixed([(*pod(POD_UID, "deployer-7d9f")).clone()]);
    let id = identifier(&s, Some(index));
    let pod_cgroup = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    );
    let token = s.sign(&claims(Some(POD_UID)));

    let identity = id
        .identify(&connection(Some(&pod_cgroup)), &bearer(&token))
        .await
        .unwrap();
    assert_eq!(identity.user.username, "system:serviceaccount:ci:deployer");
    assert_eq!(identity.workload.describe(), "pod ci/deployer-7d9f/app");
    assert!(identity.impersonate);

    // The same token from a host process: stolen.
    let err = id
        .identify(
            &connection(Some("/system.slice/cron.service")),
            &bearer(&token),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Unidentified::StolenToken { .. }), "{err:?}");
    assert_eq!(err.status().http_status(), StatusCode::FORBIDDEN);

    // A pod the node does not run (deleted): refused after the index had its chance.
    let gone = pod_cgroup.replace(&POD_UID.replace('-', "_"), &OTHER_UID.replace('-', "_"));
    let err = id
        .identify(&connection(Some(&gone)), &bearer(&token))
        .await
        .unwrap_err();
    // The token verified: the refusal says whose it was.
    assert_eq!(
        err.user().map(|u| u.username.as_str()),
        Some("system:serviceaccount:ci:deployer")
    );
    let err = err.status();
    assert!(
        err.message.contains("not on this node's pod list"),
        "{}",
        err.message
    );

    // Missing and malformed credentials: 401, whatever the connection.
    for headers in [HeaderMap::new(), {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        h
    }] {
        let err = id
            .identify(&connection(Some(&pod_cgroup)), &headers)
            .await
            .unwrap_err();
        assert!(err.user().is_none());
        let err = err.status();
        assert_eq!(
            err.http_status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            err.message
        );
    }
    // The claims of another pod spliced under this token's signature.
    let other = s.sign(&claims(Some(OTHER_UID)));
    let mut spliced: Vec<&str> = token.split('.').collect();
    spliced[1] = other.split('.').nth(1).unwrap();
    let err = id
        .identify(&connection(Some(&pod_cgroup)), &bearer(&spliced.join(".")))
        .await
        .unwrap_err();
    let err = err.status();
    assert_eq!(err.http_status(), StatusCode::UNAUTHORIZED);
    assert!(err.message.contains("signature"), "{}", err.message);

    // A token kgate cannot verify locally and no API client to ask: 503, not a pass.
    let err = id
        .identify(
            &connection(Some(&pod_cgroup)),
            &bearer("legacy-opaque-token"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().http_status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A token used from another pod on the node: refused as a stolen token, with the
/// user it verified as, the pod it is bound to and the pod it came from (what the
/// record of the attempt needs).
#[tokio::test]
async fn a_token_from_another_pod_is_a_stolen_token_with_both_pods() {
    let s = Signer::new("k1");
    let index = PodIndex::fixed([
        (*pod(POD_UID, "deployer-7d9f")).clone(),
        (*pod(OTHER_UID, "web-0")).clone(),
    ]);
    let id = identifier(&s, Some(index));
    let web = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        OTHER_UID.replace('-', "_")
    );
    let refusal = id
        .identify(
            &connection(Some(&web)),
            &bearer(&s.sign(&claims(Some(POD_UID)))),
        )
        .await
        .unwrap_err();
    let Unidentified::StolenToken {
        user,
        token_pod,
        workload,
    } = &refusal
    else {
        panic!("a stolen token: {refusal:?}")
    };
    assert_eq!(
        (user.username.as_str(), user.uid.as_str()),
        ("system:serviceaccount:ci:deployer", "sa-uid-1")
    );
    assert_eq!(
        (
            token_pod.namespace.as_str(),
            token_pod.name.as_str(),
            token_pod.uid.as_str()
        ),
        ("ci", "deployer-7d9f", POD_UID)
    );
    let Workload::Pod { pod, container } = workload else {
        panic!("from a pod: {workload:?}")
    };
    assert_eq!(
        (pod.name.as_str(), pod.uid.as_str(), container.as_deref()),
        ("web-0", OTHER_UID, Some("app"))
    );
    assert_eq!(refusal.user(), Some(user));
    assert_eq!(
        refusal.workload().map(Workload::describe).as_deref(),
        Some("pod ci/web-0/app")
    );
    let status = refusal.status();
    assert_eq!(status.http_status(), StatusCode::FORBIDDEN);
    assert_eq!(
        status.message,
        format!(
            "kgate: token bound to pod ci/deployer-7d9f ({POD_UID}) used from pod ci/web-0 ({OTHER_UID})"
        )
    );
}

#[tokio::test]
async fn a_pod_connection_without_a_synced_index_is_not_guessed() {
    let s = Signer::new("k1");
    let id = identifier(&s, None);
    let cgroup = format!("/kubepods/besteffort/pod{POD_UID}/{CONTAINER_ID}");
    let err = id
        .identify(
            &connection(Some(&cgroup)),
            &bearer(&s.sign(&claims(Some(POD_UID)))),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().http_status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A pod's container is named from the node's pod list whatever the runtime: the ID in
/// the cgroup path is the one `containerStatuses[].containerID` carries after its
/// `<runtime>://` scheme (init and ephemeral containers included).
#[tokio::test]
async fn each_runtimes_container_is_named_from_the_pods_statuses() {
    const CONTAINERD: &str = "19cd7a809d879d9c855bb93e4d399efe795a769ac856faaa5256cdd8387fe4b1";
    const CRIO: &str = "5819a498721cf8bb7e334809c9e48aa310bfc98801eb8017034ad17fb0749920";
    const DOCKER: &str = "84e9ffffe97fea4c5a0f01d401611cbafbf7e559fc6190ed74abfc2b25e889d4";
    let status = |name: &str, id: &str| {
        json!({"name": name, "containerID": id, "image": "x",
        "imageID": "", "ready": true, "restartCount": 0})
    };
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "ci", "name": "deployer-7d9f", "uid": POD_UID},
        "spec": {"serviceAccountName": "deployer", "containers": []},
        "status": {
            "containerStatuses": [
                status("app", &format!("containerd://{CONTAINERD}")),
                status("sidecar", &format!("cri-o://{CRIO}")),
            ],
            "initContainerStatuses": [status("init", &format!("docker://{DOCKER}"))],
        },
    }))
    .unwrap();
    let info = PodInfo::of(&pod).unwrap();
    let s = Signer::new("k1");
    let id = identifier(&s, Some(PodIndex::fixed([info])));
    let token = s.sign(&claims(Some(POD_UID)));
    let slice = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    let cgroupfs = format!("/kubepods/burstable/pod{POD_UID}");
    let cases = [
        (
            format!("{slice}/cri-containerd-{CONTAINERD}.scope"),
            "pod ci/deployer-7d9f/app",
        ),
        (
            format!("{cgroupfs}/{CONTAINERD}"),
            "pod ci/deployer-7d9f/app",
        ),
        (
            format!("{slice}/crio-{CRIO}.scope/container"),
            "pod ci/deployer-7d9f/sidecar",
        ),
        (
            format!("{cgroupfs}/crio-{CRIO}"),
            "pod ci/deployer-7d9f/sidecar",
        ),
        (
            format!("{slice}/docker-{DOCKER}.scope"),
            "pod ci/deployer-7d9f/init",
        ),
        (format!("{cgroupfs}/{DOCKER}"), "pod ci/deployer-7d9f/init"),
        // the pod's own cgroup, conmon, and a container the statuses do not list yet:
        // the pod, no container
        (slice.clone(), "pod ci/deployer-7d9f"),
        (
            format!("{slice}/crio-conmon-{CRIO}.scope"),
            "pod ci/deployer-7d9f",
        ),
        (format!("{cgroupfs}/{CONTAINER_ID}"), "pod ci/deployer-7d9f"),
    ];
    for (cgroup, want) in cases {
        let identity = id
            .identify(&connection(Some(&cgroup)), &bearer(&token))
            .await
            .unwrap_or_else(|e| panic!("{cgroup}: {e}"));
        assert_eq!(identity.workload.describe(), want, "{cgroup}");
    }
}
