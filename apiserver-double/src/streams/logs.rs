//! `GET .../pods/NAME/log`: the container wrote `line 1` .. `line 10` at start-up
//! (stamped 2026-01-01T00:00:01Z .. :10Z); with `follow=true` it goes on writing
//! `line 11`, `line 12`, ... every [`interval`] until the client goes, each line sent
//! as its own chunk the moment it is written. `tailLines`, `timestamps` (the kubelet's
//! fixed nine-digit RFC 3339 form), `limitBytes` and `previous` (no container has
//! restarted, so it is the kubelet's 400) behave as on a real node.
//!
//! Not here: `sinceSeconds` and `sinceTime` (ignored), log rotation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;

use super::{super::channel_body, Body, LOG_INTERVAL, Pod, Req, is_true, status};

/// The lines written before any request, and their fixed time (2026-01-01T00:00:00Z).
const BOOT_LINES: u64 = 10;
const BOOT_EPOCH: u64 = 1_767_225_600;

/// The follow-mode interval: `KGATE_DOUBLE_LOG_INTERVAL_MS`, else [`LOG_INTERVAL`].
pub(super) fn interval() -> Duration {
    std::env::var("KGATE_DOUBLE_LOG_INTERVAL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(LOG_INTERVAL, Duration::from_millis)
}

pub(super) fn serve(req: &Req, pod: &Pod, container: &str) -> hyper::Response<Body> {
    if is_true(req.query("previous")) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                pod.name
            ),
        );
    }
    let mut numbers = Vec::new();
    for (key, min) in [("tailLines", 0), ("limitBytes", 1)] {
        match req.query(key).map(str::parse::<i64>) {
            None => numbers.push(None),
            Some(Ok(n)) if n >= min => numbers.push(Some(n.unsigned_abs())),
            Some(_) => {
                let shown = req.query(key).unwrap_or_default();
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!(
                        "PodLogOptions \"{}\" is invalid: {key}: Invalid value: {shown}: must be greater than or equal to {min}",
                        pod.name
                    ),
                );
            }
        }
    }
    let (tail, limit) = (numbers[0], numbers[1]);
    let follow = is_true(req.query("follow"));
    let timestamps = is_true(req.query("timestamps"));
    let first = tail.map_or(1, |t| BOOT_LINES.saturating_sub(t) + 1);
    let (tx, body) = channel_body();
    let every = interval();
    tokio::spawn(async move {
        let mut budget = limit.unwrap_or(u64::MAX);
        let mut n = first;
        loop {
            if n > BOOT_LINES {
                if !follow {
                    return;
                }
                tokio::time::sleep(every).await;
            }
            let at = if n <= BOOT_LINES {
                Duration::from_secs(BOOT_EPOCH + n)
            } else {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
            };
            let mut line = format!("line {n}\n");
            if timestamps {
                line = format!("{} {line}", rfc3339_nanos(at));
            }
            // limitBytes cuts mid-line, as the kubelet's limited writer does.
            let take = usize::try_from(budget)
                .unwrap_or(usize::MAX)
                .min(line.len());
            budget -= take as u64;
            if tx.send(Bytes::from(line).slice(..take)).await.is_err() || budget == 0 {
                return;
            }
            n += 1;
        }
    });
    super::super::response(StatusCode::OK, "text/plain", body)
}

/// `2006-01-02T15:04:05.000000000Z07:00` in UTC, the kubelet's `timeFormatOut`.
fn rfc3339_nanos(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            rfc3339_nanos(Duration::from_secs(BOOT_EPOCH + 1)),
            "2026-01-01T00:00:01.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(Duration::new(951_782_400 + 86_399, 5)),
            "2000-02-29T23:59:59.000000005Z"
        );
    }
}
