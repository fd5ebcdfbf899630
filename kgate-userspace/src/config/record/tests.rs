use super::*;

fn record(yaml: &str) -> Result<Record, String> {
    let record: Record = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    record.validate().map_err(|e| e.to_string())?;
    Ok(record)
}

#[test]
fn levels() {
    let r = record("{}").unwrap();
    assert_eq!(
        (r.level, r.request_object_max_bytes),
        (Level::Metadata, 262_144)
    );
    let r = record("{level: Request, requestObjectMaxBytes: 1024}").unwrap();
    assert_eq!(
        (r.level, r.request_object_max_bytes),
        (Level::Request, 1024)
    );
    let r = record("{level: RequestResponse, responseObjectMaxBytes: 4096}").unwrap();
    assert_eq!(
        (r.level, r.response_object_max_bytes),
        (Level::RequestResponse, 4096)
    );
    let err = record("{level: Everything}").unwrap_err();
    assert!(
        err.contains("Metadata") && err.contains("RequestResponse"),
        "{err}"
    );
    let err = record("{responseObjectMaxBytes: 0}").unwrap_err();
    assert!(err.contains("`record.responseObjectMaxBytes`"), "{err}");
    let err = record("{requestObjectMaxBytes: 0}").unwrap_err();
    assert!(err.contains("`record.requestObjectMaxBytes`"), "{err}");
}

#[test]
fn webhook_defaults() {
    let r = record("{dir: /r, webhook: {url: 'https://audit:8443/events', caFile: /ca}}").unwrap();
    let w = r.webhook.unwrap();
    assert_eq!(
        (
            w.batch_max_records,
            w.batch_max_wait_millis,
            w.initial_backoff_millis,
            w.max_backoff_millis,
            w.timeout_seconds,
        ),
        (400, 1000, 500, 30_000, 30)
    );
    assert_eq!(w.token_file, None);
}

#[test]
fn webhook_errors_name_the_field() {
    let hook = "url: 'https://a:1/x', caFile: /ca";
    let cases = [
        (format!("{{webhook: {{{hook}}}}}"), "record.dir"),
        (
            "{dir: /r, webhook: {url: 'http://a:1/x', caFile: /ca}}".to_owned(),
            "`record.webhook.url`",
        ),
        (
            "{dir: /r, webhook: {url: 'not a url', caFile: /ca}}".to_owned(),
            "`record.webhook.url`",
        ),
        (
            "{dir: /r, webhook: {url: 'https://a:1/x'}}".to_owned(),
            "caFile",
        ),
        (
            format!("{{dir: /r, webhook: {{{hook}, batchMaxRecords: 0}}}}"),
            "`record.webhook.batchMaxRecords`",
        ),
        (
            format!("{{dir: /r, webhook: {{{hook}, batchMaxWaitMillis: 0}}}}"),
            "`record.webhook.batchMaxWaitMillis`",
        ),
        (
            format!(
                "{{dir: /r, webhook: {{{hook}, initialBackoffMillis: 100, maxBackoffMillis: 10}}}}"
            ),
            "`record.webhook.maxBackoffMillis`",
        ),
        (
            format!("{{dir: /r, webhook: {{{hook}, timeoutSeconds: 0}}}}"),
            "`record.webhook.timeoutSeconds`",
        ),
        (
            format!("{{dir: /r, webhook: {{{hook}, batchSize: 3}}}}"),
            "batchSize",
        ),
    ];
    for (yaml, needle) in cases {
        let err = record(&yaml).unwrap_err();
        assert!(
            err.contains(needle),
            "{yaml}: {err:?} does not name {needle}"
        );
    }
}
