//! Why kgate answered a request itself. Every stage refuses with a [`Refusal`]: its
//! [`Kind`] says what happened (metrics and records read the kind, never the message),
//! its [`Side`] who caused it, and its `Status` what the client reads.
//! [`Refusal::respond`] is the one place a refusal becomes the response.
//!
//! Not here: the wording of each refusal (the stage that refuses knows the rule, the
//! field or the limit it names), or answers of the API server passed on as they are.

use http::Response;

use crate::{
    api_status::{Status, respond_to},
    body::Body,
    identity::Unidentified,
};

/// Who caused a refusal (pingora's downstream / upstream / internal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client's request or credentials.
    Client,
    /// The API server: unreachable, or an answer kgate cannot pass on.
    Upstream,
    /// kgate itself: not ready, or it cannot record.
    Kgate,
}

impl Side {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Kgate => "kgate",
        }
    }
}

/// What a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// identify: no token, one that does not verify, or one kgate cannot check now.
    Unauthenticated,
    /// identify: a pod-bound token used from another pod or the host.
    StolenToken,
    /// identify: a token bound to no pod, of a user not allowed one.
    Unbound,
    /// identify: the connection's pod cannot be established.
    NoWorkload,
    /// authorize: the cluster's policies have not loaded, so kgate cannot decide.
    PoliciesNotLoaded,
    /// authorize: what kgate never lets through (impersonation headers, an upgrade
    /// protocol the API server does not speak).
    NotAllowed,
    /// authorize: a policy rule denies.
    PolicyDenied,
    /// mask, review: the client accepts no format kgate can read.
    NotAcceptable,
    /// approve: no approval store, denied, timed out, or nothing to approve.
    NotApproved,
    /// mask (writes): a placeholder kgate cannot restore, a patch that reads a masked
    /// field, or a body it cannot check.
    NotRestorable,
    /// record: the request cannot be recorded durably, so it is not forwarded.
    NotRecorded,
    /// mask, review: the API server's answer cannot be masked or read.
    NotMaskable,
}

impl Kind {
    /// The metric label: the variant's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "Unauthenticated",
            Self::StolenToken => "StolenToken",
            Self::Unbound => "Unbound",
            Self::NoWorkload => "NoWorkload",
            Self::PoliciesNotLoaded => "PoliciesNotLoaded",
            Self::NotAllowed => "NotAllowed",
            Self::PolicyDenied => "PolicyDenied",
            Self::NotAcceptable => "NotAcceptable",
            Self::NotApproved => "NotApproved",
            Self::NotRestorable => "NotRestorable",
            Self::NotRecorded => "NotRecorded",
            Self::NotMaskable => "NotMaskable",
        }
    }
}

/// A request kgate answers itself.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub kind: Kind,
    pub status: Status,
}

// === impl Refusal ===

impl Refusal {
    pub(crate) fn new(kind: Kind, status: Status) -> Self {
        Self { kind, status }
    }

    /// The identify stage's refusal, by the way identification failed.
    pub(crate) fn unidentified(why: &Unidentified) -> Self {
        let kind = match why {
            Unidentified::Unverified(_) => Kind::Unauthenticated,
            Unidentified::NoWorkload { .. } => Kind::NoWorkload,
            Unidentified::StolenToken { .. } => Kind::StolenToken,
            Unidentified::Unbound { .. } => Kind::Unbound,
        };
        Self::new(kind, why.status())
    }

    /// Who caused it: a 5xx the client did not cause is the API server's (it could not
    /// be reached or read) or kgate's own.
    pub(crate) fn side(&self) -> Side {
        match self.kind {
            Kind::NotRecorded | Kind::PoliciesNotLoaded => Side::Kgate,
            Kind::NotMaskable => Side::Upstream,
            _ if self.status.code >= 500 => Side::Upstream,
            _ => Side::Client,
        }
    }

    /// The response the client gets for a request to `path` (client-go reads some
    /// discovery paths raw: see [`Status::encode_for`]).
    pub(crate) fn respond(&self, path: &str) -> Response<Body> {
        respond_to(path, &self.status)
    }
}
