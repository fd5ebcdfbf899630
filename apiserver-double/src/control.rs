//! What a test does to a running double besides HTTP: tokens it accepts or mints,
//! signing keys rotated or retired, access reviews that say no, objects created,
//! replaced or read directly (as a controller would), bulk objects, and the log of
//! every request received.
//!
//! Objects go through the same store as the API's writes, so watches see their events.
//!
//! Not here: faults (the double answers what it can; tests that need a failing API
//! server put kgate-tests' fault proxy in front of it).

use serde_json::{Value, json};

use crate::{
    Handle, Logged, resources, reviews,
    tokens::{Signer, Subject},
};

impl Handle {
    /// SubjectAccessReviews for `user` answer "not allowed" from now on.
    pub fn deny_access_reviews_for(&self, user: &str) {
        self.state
            .denied_users
            .lock()
            .unwrap()
            .insert(user.to_owned());
    }

    /// RBAC grants `user` everything but `verb` on `resource` (and every other
    /// refusal): SelfSubjectAccessReviews and SubjectAccessReviews that ask about it
    /// answer `allowed: false`. For a SubjectAccessReview `resource` may also be
    /// `resource/subresource` or a non-resource path (`/openid/v1/jwks`). Requests
    /// themselves are not refused (the double does not authorize them), but for verb
    /// `impersonate`, which the impersonation filter asks RBAC about (`users`,
    /// `groups`, `serviceaccounts`, `uids`, `userextras`): those impersonations get a
    /// 403.
    pub fn refuse_access(&self, user: &str, verb: &str, resource: &str) {
        self.state
            .refused_access
            .lock()
            .unwrap()
            .push(reviews::Refusal {
                user: user.to_owned(),
                verb: verb.to_owned(),
                resource: resource.to_owned(),
            });
    }

    /// Makes another bearer token valid.
    pub fn add_token(&self, token: &str) {
        self.state.tokens.lock().unwrap().insert(token.to_owned());
    }

    /// A service-account token as TokenRequest would issue it.
    pub fn mint_token(
        &self,
        subject: &Subject,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> String {
        self.state
            .signer
            .mint(subject, audiences, expiration_seconds)
            .0
    }

    /// A token shaped like `mint_token`'s but signed by a key the double never had.
    pub fn mint_foreign_token(
        &self,
        subject: &Subject,
        audiences: &[String],
        expiration_seconds: u64,
    ) -> String {
        Signer::new(&self.state.signer.issuer)
            .mint(subject, audiences, expiration_seconds)
            .0
    }

    /// Signs with a new key from now on; tokens signed with the old keys stay valid
    /// and the JWKS publishes every key, until `retire_old_signing_keys`.
    pub fn rotate_signing_key(&self) {
        self.state.signer.rotate();
    }

    /// Drops every signing key but the newest: tokens they signed stop verifying.
    pub fn retire_old_signing_keys(&self) {
        self.state.signer.retire_old_keys();
    }

    /// A JWT with arbitrary claims, signed with the double's key (for broken tokens).
    pub fn sign_claims(&self, claims: &Value) -> String {
        self.state.signer.sign(claims)
    }

    /// The object stored for `resource`/`namespace`/`name`.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = resources::RESOURCES.iter().find(|r| r.name == resource)?;
        self.state.store.get(r.name, namespace, name)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Creates an object directly (no HTTP), as a controller would.
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> anyhow::Result<Value> {
        let r = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .ok_or_else(|| anyhow::anyhow!("unknown resource {resource}"))?;
        self.state
            .store
            .create(r.name, namespace, object)
            .map_err(|_| anyhow::anyhow!("{resource} exists"))
    }

    /// Replaces an object directly (no HTTP).
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        mut object: Value,
    ) -> anyhow::Result<Value> {
        let r = resources::RESOURCES
            .iter()
            .find(|r| r.name == resource)
            .ok_or_else(|| anyhow::anyhow!("unknown resource {resource}"))?;
        object["metadata"]["resourceVersion"] = json!("");
        self.state
            .store
            .update(r.name, namespace, object)
            .map_err(|_| anyhow::anyhow!("{resource} missing"))
    }

    /// Inserts `count` ConfigMaps of about `size` bytes each into `namespace`.
    pub fn insert_configmaps(&self, namespace: &str, count: usize, size: usize) {
        let filler = "x".repeat(size);
        for i in 0..count {
            let obj = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": format!("bulk-{i:07}")}, "data": {"blob": filler}});
            let _ = self.state.store.create("configmaps", namespace, obj);
        }
    }

    /// Inserts `count` Secrets into `namespace`, each with one `data` value of `size`
    /// base64 characters (`eHh4`, "xxx", repeated).
    pub fn insert_secrets(&self, namespace: &str, count: usize, size: usize) {
        let filler = "eHh4".repeat(size / 4);
        for i in 0..count {
            let obj = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": format!("bulk-{i:07}")}, "type": "Opaque", "data": {"blob": filler}});
            let _ = self.state.store.create("secrets", namespace, obj);
        }
    }
}
