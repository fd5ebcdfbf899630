use super::*;
use serde_json::json;

fn service(spec: &serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": "kubernetes"}, "spec": spec})).unwrap()
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).unwrap()
}

#[test]
fn service_addresses_cover_every_cluster_ip_and_tcp_port() {
    let cases = [
        (
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 443}]}),
            vec!["10.96.0.1:443"],
        ),
        (
            json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00:96::1"],
                       "ports": [{"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
            vec!["10.96.0.1:443", "[fd00:96::1]:443"],
        ),
        (
            json!({"clusterIP": "None", "ports": [{"port": 443}]}),
            vec![],
        ),
        (json!({"ports": [{"port": 443}]}), vec![]),
    ];
    for (spec, want) in cases {
        let got: Vec<String> = service_addresses(&service(&spec))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, want, "{spec}");
    }
}

#[test]
fn slice_endpoints_follow_the_api_defaults() {
    let s = slice(json!({
        "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["not-an-ip"]},
        ],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}, {"name": "any"}],
    }));
    assert_eq!(
        slice_endpoints(&s),
        vec![
            Endpoint {
                addr: "10.0.0.1:6443".parse().unwrap(),
                ready: true
            },
            Endpoint {
                addr: "10.0.0.2:6443".parse().unwrap(),
                ready: false
            },
        ]
    );
    let fqdn = slice(json!({"metadata": {"name": "x"}, "addressType": "FQDN",
            "endpoints": [{"addresses": ["api.example.com"]}], "ports": [{"port": 443}]}));
    assert!(slice_endpoints(&fqdn).is_empty());
}

#[test]
fn targets_union_discovered_and_configured_and_dial_only_ready() {
    let d = Discovered {
        service: vec!["10.96.0.1:443".parse().unwrap()],
        endpoints: vec![
            Endpoint {
                addr: "10.0.0.1:6443".parse().unwrap(),
                ready: true,
            },
            Endpoint {
                addr: "10.0.0.2:6443".parse().unwrap(),
                ready: false,
            },
        ],
        synced: true,
    };
    let extra = [
        "10.0.0.1:6443".parse().unwrap(),
        "[::ffff:192.0.2.7]:443".parse().unwrap(),
    ];
    let got: Vec<(String, TargetKind)> = d
        .targets(&extra)
        .into_iter()
        .map(|(a, k)| (a.to_string(), k))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1:6443".to_owned(), TargetKind::Endpoint),
            ("10.0.0.2:6443".to_owned(), TargetKind::Endpoint),
            ("10.96.0.1:443".to_owned(), TargetKind::ServiceIp),
            ("192.0.2.7:443".to_owned(), TargetKind::Extra),
        ]
    );
    assert_eq!(
        d.ready_endpoints(),
        vec!["10.0.0.1:6443".parse::<SocketAddr>().unwrap()]
    );
}
