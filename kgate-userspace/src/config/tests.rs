use super::*;

const TLS: &str = "tls: {certFile: /c, keyFile: /k}\nidentity: {nodeName: n1}\n";
const MINIMAL: &str = "upstream: {server: 'https://10.0.0.1:6443'}\nredirect: {ipv4: 10.0.0.5}\ntls: {certFile: /c, keyFile: /k}\nidentity: {nodeName: n1}\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{text}{TLS}"))
}

#[test]
fn defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.listen, "0.0.0.0:6443".parse().unwrap());
    assert_eq!(c.bpffs, PathBuf::from("/sys/fs/bpf"));
    assert_eq!(c.cgroup, CgroupSetting::Auto);
    let to = c.redirect_to();
    assert_eq!(to.ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(to.ipv6, None);
    assert_eq!(to.port, 6443);
    assert!(
        c.discovery.enabled(c.kernel),
        "discovery is on with the kernel programs"
    );
    assert_eq!(c.discovery.service(), ("default", "kubernetes"));
    assert!(c.discovery.upstream);
}

#[test]
fn redirect_defaults_to_a_specific_listen_address() {
    let c = parse("listen: '[fd00::1]:7443'\nupstream: {server: 'https://a:1'}\n").unwrap();
    let to = c.redirect_to();
    assert_eq!(to.ipv6, Some("fd00::1".parse().unwrap()));
    assert_eq!(to.port, 7443);
}

#[test]
fn overrides_apply_before_validation() {
    let text = "upstream: {server: 'https://a:1'}\ntls: {certFile: /c, keyFile: /k}\nidentity: {nodeName: n1}\n";
    assert!(Config::parse(text).is_err(), "no redirect address anywhere");
    let c =
        Config::parse_with(text, |c| c.redirect.ipv4 = Some(Ipv4Addr::new(10, 1, 2, 3))).unwrap();
    assert_eq!(c.redirect_to().ipv4, Some(Ipv4Addr::new(10, 1, 2, 3)));
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ntargetz: []\n",
            "targetz",
        ),
        ("upstream: {server: 'https://a:1'}\n", "`redirect`"),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 0.0.0.0}\n",
            "`redirect`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\nlisten: '0.0.0.0:0'\n",
            "`listen`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ntargets: ['10.96.0.1:0']\n",
            "`targets`",
        ),
        (
            "upstream: {server: ''}\nredirect: {ipv4: 10.0.0.5}\n",
            "`upstream.server`",
        ),
        (
            "upstream: {server: 'http://a:1'}\nredirect: {ipv4: 10.0.0.5}\n",
            "`upstream.server`",
        ),
        (
            "upstream: {server: 'https://a:1/api'}\nredirect: {ipv4: 10.0.0.5}\n",
            "`upstream.server`",
        ),
        (
            "upstream: {server: 'https://a:1', clientKeyFile: /k}\nredirect: {ipv4: 10.0.0.5}\n",
            "`upstream.clientCertFile`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ncgroup: relative/x\n",
            "`cgroup`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5, prot: 1}\n",
            "prot",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 'not-an-ip'}\n",
            "redirect.ipv4",
        ),
        ("redirect: {ipv4: 10.0.0.5}\n", "upstream"),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ndiscovery: {service: kubernetes}\n",
            "`discovery.service`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ndiscovery: {service: 'Default/k8s'}\n",
            "`discovery.service`",
        ),
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ndiscovery: {enable: true}\n",
            "enable",
        ),
    ];
    let identity_cases = [
        ("kernel: true\n", "`identity.nodeName`"),
        (
            "identity: {nodeName: n1, impersonate: ['system:serviceaccount:ci:*']}\n",
            "`identity.impersonate`",
        ),
        (
            "identity: {nodeName: n1, unboundSubjects: ['']}\n",
            "`identity`",
        ),
        ("identity: {nodeName: n1, audience: [x]}\n", "audience"),
        (
            "identity: {nodeName: n1}\nrecord: {dir: rel/dir}\n",
            "`record.dir`",
        ),
        (
            "identity: {nodeName: n1}\nrecord: {segmentBytes: 10}\n",
            "`record.segmentBytes`",
        ),
        (
            "identity: {nodeName: n1}\nrecord: {durability: sometimes}\n",
            "durability",
        ),
        (
            "identity: {nodeName: n1}\nrecord: {maxByte: 1}\n",
            "maxByte",
        ),
    ];
    for (text, needle) in identity_cases {
        let text = format!(
            "upstream: {{server: 'https://a:1'}}\nredirect: {{ipv4: 10.0.0.5}}\ntls: {{certFile: /c, keyFile: /k}}\n{text}"
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(needle),
            "{text:?}: error {err:?} does not name {needle}"
        );
    }
    for (text, needle) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains(needle),
            "{text:?}: error {err:?} does not name {needle}"
        );
    }
    let no_key =
        "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ntls: {certFile: /c}\n";
    let err = Config::parse(no_key).unwrap_err().to_string();
    assert!(err.contains("tls") && err.contains("keyFile"), "{err}");
}

#[test]
fn gateway_mode_states_what_it_gives_up() {
    const GATEWAY: &str = "listen: '0.0.0.0:6443'\ndirectClients: allow\n\
        tls: {certFile: /c, keyFile: /k}\n\
        upstream: {server: 'https://10.0.0.1:6443', tokenFile: /t}\n";
    const JWT: &str = "  jwt:\n  - issuer: {url: 'https://idp.example', audiences: [kgate]}\n    \
        claimMappings: {username: {claim: sub, prefix: 'oidc:'}}\n";
    let ok = format!("{GATEWAY}kernel: false\nidentity:\n  podBinding: false\n{JWT}");
    let c = Config::parse(&ok).unwrap();
    assert!(c.identity.gateway() && !c.identity.pod_binding());
    let cases = [
        // `kernel` left to its default.
        (
            format!("{GATEWAY}identity:\n  podBinding: false\n{JWT}"),
            "`kernel`",
        ),
        // Pod binding left to its default.
        (format!("{GATEWAY}kernel: false\nidentity:\n{JWT}"), "`identity.podBinding`"),
        // No credential to impersonate with.
        (
            ok.replace(", tokenFile: /t", ""),
            "`upstream.tokenFile`",
        ),
        // An inline authenticator is validated with the rest.
        (
            ok.replace("prefix: 'oidc:'", "x: y"),
            "unknown field",
        ),
        (
            ok.replace(", prefix: 'oidc:'", ""),
            "`identity.jwt[0].claimMappings.username.prefix`",
        ),
        // A file makes gateway mode too.
        (
            format!("{GATEWAY}identity: {{authenticationConfigFile: /a.yaml}}\n"),
            "`kernel`",
        ),
        // Pod binding off is for gateways only.
        (
            "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\ntls: {certFile: /c, keyFile: /k}\nidentity: {nodeName: n1, podBinding: false}\n".to_owned(),
            "`identity.podBinding`",
        ),
    ];
    for (text, needle) in cases {
        let error = Config::parse(&text).expect_err(&text).to_string();
        assert!(error.contains(needle), "{text}\n-> {error}");
    }
}

/// The gateway's shipped config and authentication file load as they are.
#[test]
fn the_gateway_deployment_config_loads() {
    /// The `KEY: |` block of a ConfigMap manifest, unindented.
    fn block(manifest: &str, key: &str) -> String {
        let start = manifest.find(&format!("{key}: |")).expect("key") + key.len() + 3;
        manifest[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect()
    }
    let config = block(
        include_str!("../../../deploy/gateway/configmap.yaml"),
        "config.yaml",
    );
    let c = Config::parse(&config).unwrap();
    assert!(c.identity.gateway() && !c.kernel && !c.identity.pod_binding());
    assert_eq!(c.identity.client_impersonation, ClientImpersonation::Policy);
    let authn = block(
        include_str!("../../../deploy/gateway/authentication-config.yaml"),
        "authentication-config.yaml",
    );
    let jwt = authn::parse_authentication_configuration(&authn, "file", None).unwrap();
    assert_eq!(jwt.len(), 1);
}

#[test]
fn approval_notify_targets() {
    let base = "upstream: {server: 'https://a:1'}\nredirect: {ipv4: 10.0.0.5}\n";
    let c = parse(&format!(
        "{base}approval:\n  consoleUrl: https://console.example.com\n  notify:\n\
         \x20   - {{name: sre, format: slack, urlFile: /etc/kgate/slack-url, events: [held]}}\n\
         \x20   - {{name: events, format: cloudevents, url: 'https://events.example.com/in', caFile: /ca.crt}}\n\
         \x20   - {{name: from-secret, format: slack, secretRef: {{namespace: kgate-system, name: slack, key: url}}}}\n"
    ))
    .unwrap();
    let notify = &c.approval.notify;
    assert_eq!(notify.len(), 3);
    assert_eq!(c.approval.notify_queue, 1024);
    assert!(notify[0].wants(NotifyEvent::Held) && !notify[0].wants(NotifyEvent::Denied));
    assert!(NotifyEvent::ALL.iter().all(|e| notify[1].wants(*e)));
    assert_eq!(notify[1].format, Format::CloudEvents);
    assert_eq!(notify[1].initial_backoff_millis, 500);
    assert_eq!(notify[1].max_backoff_millis, 30_000);
    assert_eq!(notify[1].decided_retry_seconds, 600);
    assert!(parse(base).unwrap().approval.notify.is_empty());

    let target = |fields: &str| format!("{base}approval: {{notify: [{{{fields}}}]}}\n");
    let cases = [
        (
            target("name: a, format: slack, url: 'http://hooks.example.com/s3cr3t'"),
            "approval.notify[0].url",
        ),
        (target("name: a, format: slack"), "approval.notify[0].url"),
        (
            target("name: a, format: slack, url: 'https://x/y', urlFile: /u"),
            "approval.notify[0].url",
        ),
        (
            target("name: A_b, format: slack, url: 'https://x'"),
            "approval.notify[0].name",
        ),
        (target("name: a, format: teams, url: 'https://x'"), "format"),
        (
            target("name: a, format: slack, urlFile: rel/path"),
            "approval.notify[0].urlFile",
        ),
        (
            target("name: a, format: slack, url: 'https://x', events: [decided]"),
            "events",
        ),
        (
            target("name: a, format: slack, secretRef: {namespace: n, name: '', key: k}"),
            "approval.notify[0].secretRef",
        ),
        (
            target(
                "name: a, format: slack, url: 'https://x', initialBackoffMillis: 10, maxBackoffMillis: 5",
            ),
            "approval.notify[0].maxBackoffMillis",
        ),
        (
            format!(
                "{base}approval: {{notify: [{{name: a, format: slack, url: 'https://x'}}, \
                 {{name: a, format: slack, url: 'https://y'}}]}}\n"
            ),
            "approval.notify[1].name",
        ),
        (
            format!("{base}approval: {{consoleUrl: 'ftp://console'}}\n"),
            "approval.consoleUrl",
        ),
        (
            format!("{base}approval: {{notifyQueue: 0}}\n"),
            "approval.notifyQueue",
        ),
    ];
    for (text, field) in cases {
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains(field), "{text}: {error}");
        assert!(
            !error.contains("s3cr3t"),
            "the URL is in the error: {error}"
        );
    }
}
