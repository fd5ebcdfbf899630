//! The `Status` bodies of the double's refusals, byte-for-field as the real API server
//! writes them (kind, apiVersion, status, reason, code, message, details), over raw
//! HTTPS so that no client library normalises them first.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kgate_apiserver_double::{
    ApiServer, Config, Handle,
    client::{HttpsClient, https_client},
};
use serde_json::{Value, json};

struct Raw<'a> {
    server: &'a Handle,
    client: HttpsClient,
}

impl Raw<'_> {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> (u16, String, Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server.url()))
            .header("content-type", content_type)
            .header("accept", "application/json");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = self.client.request(req).await.unwrap();
        let code = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
        (code, content_type, body)
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (code, content_type, body) = self
            .call(
                method,
                path,
                Some(self.server.admin_token()),
                "application/json",
                body,
            )
            .await;
        assert_eq!(content_type, "application/json", "{method} {path}");
        (code, body)
    }
}

/// The fields every failure Status has.
fn assert_failure(body: &Value, code: u16, reason: &str, message: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["metadata"], json!({}), "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["message"], message, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_kubernetes_statuses() {
    let server = ApiServer::start(Config::default()).await.unwrap();
    let raw = Raw {
        server: &server,
        client: https_client(server.ca_pem(), true),
    };

    // 401: a token nobody issued.
    let (code, _, body) = raw
        .call(
            "GET",
            "/api/v1/namespaces/demo/pods",
            Some("forged"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(code, 401);
    assert_failure(&body, 401, "Unauthorized", "Unauthorized");
    assert!(body.get("details").is_none(), "{body}");
    let logged = server.requests().pop().unwrap();
    assert_eq!(
        (logged.path.as_str(), logged.user),
        ("/api/v1/namespaces/demo/pods", None),
        "refused requests are logged too, with no user"
    );

    // 403: no credentials at all is the anonymous user, whom nothing authorizes.
    let (code, _, body) = raw
        .call("GET", "/api/v1/namespaces", None, "application/json", "")
        .await;
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden", "{body}");

    // 404: core and named-group resources, with details naming the resource.
    let (code, body) = raw
        .admin("GET", "/api/v1/namespaces/demo/pods/nope", "")
        .await;
    assert_eq!(code, 404);
    assert_failure(&body, 404, "NotFound", "pods \"nope\" not found");
    assert_eq!(body["details"]["name"], "nope");
    assert_eq!(body["details"]["kind"], "pods");
    let (code, body) = raw
        .admin("GET", "/apis/apps/v1/namespaces/demo/deployments/nope", "")
        .await;
    assert_eq!(code, 404);
    assert_failure(
        &body,
        404,
        "NotFound",
        "deployments.apps \"nope\" not found",
    );
    assert_eq!(body["details"]["group"], "apps");

    // 409 AlreadyExists.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-creds"}});
    let (code, body) = raw
        .admin(
            "POST",
            "/api/v1/namespaces/demo/secrets",
            &secret.to_string(),
        )
        .await;
    assert_eq!(code, 409);
    assert_failure(
        &body,
        409,
        "AlreadyExists",
        "secrets \"db-creds\" already exists",
    );
    assert_eq!(body["details"]["name"], "db-creds");

    // 409 Conflict: an update with a resourceVersion that is no longer current.
    let (_, current) = raw
        .admin("GET", "/api/v1/namespaces/demo/secrets/db-creds", "")
        .await;
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, body) = raw
        .admin(
            "PUT",
            "/api/v1/namespaces/demo/secrets/db-creds",
            &stale.to_string(),
        )
        .await;
    assert_eq!(code, 409);
    assert_failure(
        &body,
        409,
        "Conflict",
        "Operation cannot be fulfilled on secrets \"db-creds\": the object has been modified; please apply your changes to the latest version and try again",
    );

    // 415: a body in a media type the endpoint does not take.
    let (code, _, body) = raw
        .call(
            "PATCH",
            "/api/v1/namespaces/demo/secrets/db-creds",
            Some(server.admin_token()),
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(code, 415);
    assert_eq!(body["reason"], "UnsupportedMediaType", "{body}");

    // 405: TokenReview is create-only.
    let (code, body) = raw
        .admin("GET", "/apis/authentication.k8s.io/v1/tokenreviews", "")
        .await;
    assert_eq!(code, 405);
    assert_eq!(body["reason"], "MethodNotAllowed", "{body}");

    // 400: a body that is not JSON.
    let (code, body) = raw
        .admin("POST", "/api/v1/namespaces/demo/configmaps", "{not json")
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest", "{body}");

    // Nothing above changed the secret.
    assert_eq!(
        server.get("secrets", "demo", "db-creds").unwrap()["metadata"]["resourceVersion"],
        current["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_fold_string_data_into_data() {
    use base64::Engine as _;
    let server = ApiServer::start(Config::default()).await.unwrap();
    let raw = Raw {
        server: &server,
        client: https_client(server.ca_pem(), false),
    };
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-key"},
        "data": {"a": "YQ=="}, "stringData": {"b": "plain text"}});
    let (code, created) = raw
        .admin(
            "POST",
            "/api/v1/namespaces/demo/secrets",
            &secret.to_string(),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert!(created.get("stringData").is_none(), "{created}");
    let b = base64::engine::general_purpose::STANDARD
        .decode(created["data"]["b"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (created["data"]["a"].as_str(), b.as_slice()),
        (Some("YQ=="), &b"plain text"[..])
    );
    let stored = server.get("secrets", "demo", "api-key").unwrap();
    assert_eq!(stored["data"], created["data"]);
    assert!(stored.get("stringData").is_none());
}
