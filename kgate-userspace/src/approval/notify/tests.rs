use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Backoff,
    body::{self, Event, HEADER_MAX, SECTION_MAX, TEXT_MAX, escape, fit},
    deliver::PostError,
    jitter,
};
use crate::{
    approval::types::{HeldRequest, KgateApproval, KgateApprovalSpec, KgateApprovalStatus},
    config::NotifyEvent,
};

fn approval() -> KgateApproval {
    let mut object = KgateApproval::new(
        "delete-pods-x7k2p",
        KgateApprovalSpec {
            user: "system:serviceaccount:demo:bot".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:demo".into(),
            ],
            workload: "pod demo/bot-7d9/app".into(),
            process: Some("kubectl (pid 4242, /usr/bin/kubectl)".into()),
            node: "node-a".into(),
            request: HeldRequest {
                verb: "delete".into(),
                path: "/api/v1/namespaces/demo/pods/a".into(),
                resource: "pods".into(),
                namespace: "demo".into(),
                name: "a".into(),
                ..HeldRequest::default()
            },
            rule: "bots/delete-pods".into(),
            approvers: vec!["sre".into()],
            expires_at: "2026-12-05T14:05:00Z".into(),
            ..KgateApprovalSpec::default()
        },
    );
    object.metadata.uid = Some("5f0c-uid".into());
    object.status = Some(KgateApprovalStatus {
        phase: "Pending".into(),
        ..KgateApprovalStatus::default()
    });
    object
}

fn event(kind: NotifyEvent, edit: impl FnOnce(&mut KgateApproval)) -> Event {
    let mut approval = approval();
    edit(&mut approval);
    Event {
        kind,
        approval,
        time: "2026-12-05T14:01:00Z".parse::<Timestamp>().unwrap(),
    }
}

/// Every text of a Slack message: `text`, then each block's.
fn texts(message: &Value) -> Vec<String> {
    let mut out = vec![message["text"].as_str().unwrap().to_owned()];
    for block in message["blocks"].as_array().unwrap() {
        if let Some(t) = block["text"]["text"].as_str() {
            out.push(t.to_owned());
        }
        for e in block["elements"].as_array().into_iter().flatten() {
            out.push(e["text"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[test]
fn slack_messages_say_who_what_and_how_to_decide() {
    let console = Some("https://console.example.com/");
    let link = "<https://console.example.com/approvals/delete-pods-x7k2p|";
    /// Name, event, console URL, texts the message has, texts it has not.
    type Case<'a> = (
        &'a str,
        Event,
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: [Case<'_>; 6] = [
        (
            "held",
            event(NotifyEvent::Held, |_| {}),
            console,
            &[
                "Approval needed: delete pods demo/a",
                "`system:serviceaccount:demo:bot`",
                "`system:serviceaccounts:demo`",
                "`pod demo/bot-7d9/app`",
                "`kubectl (pid 4242, /usr/bin/kubectl)`",
                "`delete` `pods` `a` in namespace `demo`",
                "`bots/delete-pods`",
                "*Approvers:* sre",
                "*Waits until* 2026-12-05T14:05:00Z",
                "kgate approve delete-pods-x7k2p",
                "kgate deny delete-pods-x7k2p",
                link,
            ],
            &["Approved by"],
        ),
        (
            "held without a console",
            event(NotifyEvent::Held, |_| {}),
            None,
            &["kgate approve delete-pods-x7k2p"],
            &["console.example.com", "/approvals/"],
        ),
        (
            "approved",
            event(NotifyEvent::Approved, |a| {
                a.spec.decided_by = Some("alice".into());
                a.spec.grant_for = Some("10m".into());
            }),
            console,
            &[
                "Approved: delete pods demo/a",
                "*Approved by* `alice` at 2026-12-05T14:01:00Z",
                "repeats pass for 10m",
                "kgate: alice approved delete-pods-x7k2p",
                link,
            ],
            &["kgate approve", "Waits until"],
        ),
        (
            "denied",
            event(NotifyEvent::Denied, |a| {
                a.spec.decided_by = Some("bob".into());
                a.spec.reason = Some("not during the freeze".into());
            }),
            None,
            &[
                "Denied: delete pods demo/a",
                "*Denied by* `bob` at 2026-12-05T14:01:00Z: not during the freeze",
            ],
            &["kgate approve"],
        ),
        (
            "expired",
            event(NotifyEvent::Expired, |_| {}),
            None,
            &[
                "Expired: delete pods demo/a",
                "*Nobody decided* by 2026-12-05T14:05:00Z",
            ],
            &["kgate approve"],
        ),
        (
            "a non-resource request, a subresource-less cluster object",
            event(NotifyEvent::Held, |a| {
                a.spec.request = HeldRequest {
                    verb: "post".into(),
                    path: "/logs/<x>&y".into(),
                    ..HeldRequest::default()
                };
                a.spec.user = "<!channel> & co".into();
                a.spec.groups.clear();
                a.spec.process = None;
            }),
            None,
            &[
                "Approval needed: post /logs/<x>&y",
                "`post` `/logs/&lt;x&gt;&amp;y`",
                "`&lt;!channel&gt; &amp; co`",
            ],
            &["<!channel>", "groups", "*Process:*"],
        ),
    ];
    for (name, event, console, has, has_not) in cases {
        let message = body::slack(&event, console);
        let all = texts(&message).join("\n");
        for want in has {
            assert!(all.contains(want), "{name}: no {want:?} in\n{all}");
        }
        for unwanted in has_not {
            assert!(!all.contains(unwanted), "{name}: {unwanted:?} in\n{all}");
        }
        assert_eq!(message["blocks"][0]["type"], "header", "{name}");
    }
}

#[test]
fn slack_texts_stay_within_block_kit_limits() {
    let long = "é&".repeat(4000);
    let event = event(NotifyEvent::Held, |a| {
        a.spec.user.clone_from(&long);
        a.spec.request.name.clone_from(&long);
        a.spec.groups = vec![long.clone(); 3];
    });
    let message = body::slack(&event, Some("https://console.example.com"));
    assert!(message["text"].as_str().unwrap().chars().count() <= TEXT_MAX);
    for block in message["blocks"].as_array().unwrap() {
        let limit = if block["type"] == "header" {
            HEADER_MAX
        } else {
            SECTION_MAX
        };
        let texts = std::iter::once(&block["text"]["text"])
            .chain(
                block["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| &e["text"]),
            )
            .filter_map(Value::as_str);
        for text in texts {
            assert!(
                text.chars().count() <= limit,
                "{} chars in a {} block",
                text.chars().count(),
                block["type"]
            );
            // No escape cut in half.
            let tail = text.rsplit('&').next().unwrap_or_default();
            assert!(
                !text.contains('&')
                    || tail.starts_with("amp;")
                    || tail.starts_with("lt;")
                    || tail.starts_with("gt;")
                    || block["type"] == "header",
                "a cut escape: …{}",
                &text[text.len().saturating_sub(20)..]
            );
        }
    }
    // The commands come after the long facts, in their own section: never cut off.
    let decide = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        decide.contains("kgate approve delete-pods-x7k2p"),
        "{decide}"
    );
}

#[test]
fn fit_cuts_at_characters_and_whole_escapes() {
    let cases = [
        ("short", "abc", 5, "abc"),
        ("exact", "abcde", 5, "abcde"),
        ("cut", "abcdef", 5, "abcd…"),
        ("multibyte", "ééééé€", 5, "éééé…"),
        ("inside an escape", "ab&amp;cd", 6, "ab…"),
        ("right after an escape", "a&lt;bcdef", 7, "a&lt;b…"),
        ("a bare ampersand is kept", "a&b cdefgh", 5, "a&b …"),
        ("nothing fits", "abcdef", 1, "…"),
    ];
    for (name, input, max, want) in cases {
        assert_eq!(fit(input, max), want, "{name}");
        assert!(fit(input, max).chars().count() <= max, "{name}");
    }
    assert_eq!(escape("<a & b>"), "&lt;a &amp; b&gt;");
}

#[test]
fn cloudevents_envelope() {
    let held = event(NotifyEvent::Held, |_| {});
    let ce = body::cloudevent(&held, "node-a");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], "5f0c-uid.held");
    assert_eq!(ce["source"], "/kgate/nodes/node-a");
    assert_eq!(ce["type"], "io.kgate.approval.held");
    assert_eq!(ce["time"], "2026-12-05T14:01:00Z");
    assert_eq!(ce["subject"], "delete-pods-x7k2p");
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["data"]["kind"], "KgateApproval");
    assert_eq!(ce["data"]["apiVersion"], "kgate.io/v1alpha1");
    assert_eq!(ce["data"]["spec"]["rule"], "bots/delete-pods");
    assert_eq!(ce["data"]["status"]["phase"], "Pending");
    // The same event again (a retry) has the same id; another event of it, another.
    assert_eq!(body::cloudevent(&held, "node-a")["id"], ce["id"]);
    let denied = body::cloudevent(&event(NotifyEvent::Denied, |_| {}), "node-a");
    assert_eq!(denied["id"], "5f0c-uid.denied");
    assert_eq!(denied["type"], "io.kgate.approval.denied");
    let keys: Vec<&String> = ce.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
    assert_eq!(json!(ce["data"]["metadata"]["uid"]), json!("5f0c-uid"));
}

#[test]
fn backoff_doubles_to_the_cap_with_jitter_below() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
    let ceilings = [100, 200, 400, 800, 1000, 1000];
    for ceiling in ceilings {
        let wait = backoff.next_wait();
        let ceiling = Duration::from_millis(ceiling);
        assert!(
            wait <= ceiling && wait >= ceiling / 2,
            "{wait:?} not in [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
    let d = Duration::from_secs(2);
    for (fraction, want) in [
        (0.0, 1000),
        (0.5, 1500),
        (1.0, 2000),
        (-1.0, 1000),
        (7.0, 2000),
    ] {
        assert_eq!(
            jitter(d, fraction),
            Duration::from_millis(want),
            "{fraction}"
        );
    }
}

#[test]
fn only_client_errors_but_408_and_429_are_final() {
    let refused = |code: u16| PostError::Refused(http::StatusCode::from_u16(code).unwrap());
    for code in [400, 401, 403, 404, 410, 413, 422] {
        assert!(refused(code).is_final(), "{code}");
    }
    for code in [408, 429, 500, 502, 503, 504] {
        assert!(!refused(code).is_final(), "{code}");
    }
    assert!(!PostError::TimedOut(Duration::from_secs(1)).is_final());
    assert!(!PostError::Unreachable("refused".into()).is_final());
    assert!(!PostError::UrlUnavailable("missing".into()).is_final());
}

/// A notifier whose queue nobody drains, with targets `sre` (held only) and `events`.
fn undrained(
    queue: usize,
) -> (
    super::Notifier,
    tokio::sync::mpsc::Receiver<super::Delivery>,
) {
    use std::sync::{Arc, Mutex};

    use crate::config::{Format, NotifyTarget};
    let dir = std::env::temp_dir().join(format!("kgate-notify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["ca".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let target = |name: &str, events: Vec<NotifyEvent>| {
        let cfg = NotifyTarget {
            name: name.into(),
            url: Some("https://127.0.0.1:1/hook".into()),
            url_file: None,
            secret_ref: None,
            format: Format::CloudEvents,
            ca_file: Some(ca_file.clone()),
            events,
            initial_backoff_millis: 1,
            max_backoff_millis: 1,
            timeout_seconds: 1,
            decided_retry_seconds: 1,
        };
        Arc::new(super::Target {
            sender: super::Sender::new(&cfg, None).unwrap(),
            cfg,
            stats: super::TargetStats::default(),
        })
    };
    let (queue, rx) = tokio::sync::mpsc::channel(queue);
    let notifier = super::Notifier {
        targets: vec![
            target("sre", vec![NotifyEvent::Held]),
            target("events", Vec::new()),
        ],
        queue,
        held: Mutex::new(std::collections::HashSet::new()),
        metrics: Arc::new(crate::metrics::Metrics::default()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    (notifier, rx)
}

#[tokio::test]
async fn notifying_never_waits_a_full_queue_drops_and_counts() {
    let (notifier, mut rx) = undrained(2);
    let approval = approval();
    let started = std::time::Instant::now();
    // Held: both targets (2 deliveries, the queue is full). Approved: `events` only
    // (`sre` takes held only), dropped. A rule naming `sre`: approved goes nowhere.
    notifier.notify(NotifyEvent::Held, &approval, None);
    notifier.notify(NotifyEvent::Approved, &approval, None);
    notifier.notify(NotifyEvent::Approved, &approval, Some(&["sre".to_owned()]));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    let queued: Vec<(String, NotifyEvent)> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|d| (d.target.cfg.name.clone(), d.event.kind))
        .collect();
    assert_eq!(
        queued,
        [
            ("sre".to_owned(), NotifyEvent::Held),
            ("events".to_owned(), NotifyEvent::Held)
        ]
    );
    let status = notifier.status();
    assert_eq!((status[0].dropped, status[1].dropped), (0, 1));
    let metrics = notifier.metrics.render();
    assert!(
        metrics.contains(
            "kgate_notifications_total{target=\"events\",event=\"approved\",result=\"dropped\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("127.0.0.1:1"), "{metrics}");
}
