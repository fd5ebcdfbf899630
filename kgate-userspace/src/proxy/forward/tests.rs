use super::*;
use crate::proxy::upgrade::is_supported_upgrade;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

#[test]
fn hop_by_hop_headers_are_dropped() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-custom"),
        ("keep-alive", "timeout=5"),
        ("x-custom", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("proxy-authorization", "Basic x"),
        ("upgrade", "websocket"),
        ("authorization", "Bearer t"),
        ("accept", "application/json"),
    ]);
    strip_hop_by_hop(&mut h, false);
    let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    assert_eq!(left, ["authorization", "accept"]);
}

#[test]
fn upgrades_keep_their_upgrade_headers() {
    let mut h = headers(&[
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]);
    assert_eq!(upgrade_protocol(&h), Some("SPDY/3.1"));
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h["connection"], "Upgrade");
    assert_eq!(h["upgrade"], "SPDY/3.1");
    assert_eq!(h["x-stream-protocol-version"], "v4.channel.k8s.io");
}

#[test]
fn impersonation_replaces_the_callers_credentials() {
    let mut h = headers(&[
        ("authorization", "Bearer caller"),
        ("accept", "application/json"),
    ]);
    let user = UserInfo {
        username: "system:serviceaccount:ci:deployer".into(),
        uid: "sa-uid".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ],
        extra: [(
            "authentication.kubernetes.io/pod-name".to_owned(),
            vec!["deployer-7d9f".to_owned()],
        )]
        .into(),
    };
    impersonate_headers(
        &mut h,
        &user,
        Some(HeaderValue::from_static("Bearer agent")),
    )
    .unwrap();
    assert_eq!(h["authorization"], "Bearer agent");
    assert_eq!(h["impersonate-user"], "system:serviceaccount:ci:deployer");
    assert_eq!(h["impersonate-uid"], "sa-uid");
    let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
    assert_eq!(groups, ["system:serviceaccounts", "system:authenticated"]);
    assert_eq!(
        h["impersonate-extra-authentication.kubernetes.io%2fpod-name"],
        "deployer-7d9f"
    );
    // Without an agent token (client certificate mode) the caller's is still gone.
    let mut h = headers(&[("authorization", "Bearer caller")]);
    impersonate_headers(&mut h, &user, None).unwrap();
    assert!(h.get("authorization").is_none());
    // A name a header cannot carry is an error, never a group left out.
    let mut broken = user.clone();
    broken.groups.push("line\nbreak".into());
    assert!(impersonate_headers(&mut h, &broken, None).is_err());
    // UTF-8 names go as they are, as Go's HTTP stack sends them.
    let mut accented = user;
    accented.username = "josé".into();
    impersonate_headers(&mut h, &accented, None).unwrap();
    assert_eq!(h["impersonate-user"].as_bytes(), "josé".as_bytes());
}

#[test]
fn upgrade_needs_connection_upgrade() {
    assert_eq!(
        upgrade_protocol(&headers(&[("upgrade", "websocket")])),
        None
    );
    assert_eq!(
        upgrade_protocol(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])),
        Some("websocket")
    );
    assert!(is_supported_upgrade("SPDY/3.1"));
    assert!(is_supported_upgrade("WebSocket"));
    assert!(!is_supported_upgrade("h2c"));
}
