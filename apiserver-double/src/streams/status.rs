//! The `metav1.Status` that ends an exec or attach session on the error channel, byte
//! for byte as Go's `encoding/json` writes it (struct field order, `omitempty`), so a
//! recorder that taps the frames sees what a real cluster sends.
//!
//! Two writers exist in a real cluster: the kubelet (which serves SPDY and the
//! WebSocket protocols up to v4 through the API server's proxy) and the API server's
//! stream translator (which answers WebSocket v5 itself and talks SPDY to the kubelet,
//! re-wrapping what it decoded). [`kubelet`] and [`translated`] reproduce each.

use serde::Serialize;

use super::process::Exit;

#[derive(Clone, Debug, Serialize)]
pub(super) struct Status {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
struct Empty {}

#[derive(Clone, Debug, Serialize)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Clone, Debug, Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

impl Status {
    fn success() -> Self {
        Self {
            metadata: Empty {},
            status: "Success",
            message: None,
            reason: None,
            details: None,
            code: None,
        }
    }

    fn exit_code(code: i32, message: String) -> Self {
        Self {
            metadata: Empty {},
            status: "Failure",
            message: Some(message),
            reason: Some("NonZeroExitCode"),
            details: Some(Details {
                causes: vec![Cause {
                    reason: Some("ExitCode"),
                    message: code.to_string(),
                }],
            }),
            code: None,
        }
    }

    /// `apierrors.NewInternalError(err)`.
    fn internal(err: &str) -> Self {
        Self {
            metadata: Empty {},
            status: "Failure",
            message: Some(format!("Internal error occurred: {err}")),
            reason: Some("InternalError"),
            details: Some(Details {
                causes: vec![Cause {
                    reason: None,
                    message: err.to_owned(),
                }],
            }),
            code: Some(500),
        }
    }

    pub(super) fn is_success(&self) -> bool {
        self.status == "Success"
    }

    /// The v4+ wire form: the JSON object.
    pub(super) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Status serialises")
    }

    /// The pre-v4 wire form: nothing on success, else `StatusError.Error()`, which is
    /// the message.
    pub(super) fn to_text(&self) -> Vec<u8> {
        if self.is_success() {
            Vec::new()
        } else {
            self.message.clone().unwrap_or_default().into_bytes()
        }
    }
}

/// What the kubelet writes when the runtime's exec returned `exit`. containerd reports
/// a non-zero exit as `error executing command [ARGV], exit code N`, and a process that
/// could not start as an error of its own (an internal error, not an exit code).
pub(super) fn kubelet(exit: &Exit, command: &[String]) -> Status {
    match exit {
        Exit::Code(0) => Status::success(),
        Exit::Code(code) => Status::exit_code(
            *code,
            format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
        ),
        Exit::StartFailed(why) => Status::internal(&format!(
            "error executing command in container: failed to exec in container: {why}"
        )),
    }
}

/// What the API server's stream translator writes after decoding the kubelet's status
/// with client-go: an exit code becomes `command terminated with exit code N` wrapped
/// once more, any other failure an internal error around the kubelet's message.
pub(super) fn translated(kubelet: &Status) -> Status {
    match (kubelet.status, kubelet.reason, &kubelet.details) {
        ("Success", ..) => Status::success(),
        (_, Some("NonZeroExitCode"), Some(details)) => {
            let code = details.causes[0].message.parse().unwrap_or(1);
            Status::exit_code(
                code,
                format!(
                    "command terminated with non-zero exit code: command terminated with exit code {code}"
                ),
            )
        }
        _ => Status::internal(kubelet.message.as_deref().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &Status) -> String {
        String::from_utf8(s.to_json()).unwrap()
    }

    #[test]
    fn wire_forms_match_go() {
        let cmd = ["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(
            json(&kubelet(&Exit::Code(0), &cmd)),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let failed = kubelet(&Exit::Code(3), &cmd);
        assert_eq!(
            json(&failed),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            json(&translated(&failed)),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: command terminated with exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let internal = kubelet(&Exit::StartFailed("boom".into()), &cmd);
        assert_eq!(
            json(&internal),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: failed to exec in container: boom","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: failed to exec in container: boom"}]},"code":500}"#
        );
        assert_eq!(
            json(&translated(&internal)),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: Internal error occurred: error executing command in container: failed to exec in container: boom","reason":"InternalError","details":{"causes":[{"message":"Internal error occurred: error executing command in container: failed to exec in container: boom"}]},"code":500}"#
        );
        assert!(kubelet(&Exit::Code(0), &cmd).to_text().is_empty());
        assert!(failed.to_text().starts_with(b"command terminated"));
    }
}
