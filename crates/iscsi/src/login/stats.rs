//! Logins counted by outcome, for monitoring: successes (normal and
//! discovery sessions) and failures by reason. One counter per outcome in
//! the server (`Shared::logins_seen`); logins are not on the data path.

use std::sync::atomic::{AtomicU64, Ordering};

use super::machine::LoginStatus;

/// How one login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEnd {
    /// A normal session logged in.
    Normal,
    /// A discovery session logged in.
    Discovery,
    /// Refused with this status.
    Refused(LoginStatus),
    /// The connection was not taken: over the connection or login limits
    /// (`admission`), or closed as the oldest in login to make room.
    Admission,
    /// The connection closed, timed out or sent a PDU that does not frame
    /// before the login completed; nothing was answered.
    Abandoned,
}

/// (result, reason) label values of each counter, in counter order.
pub const OUTCOMES: [(&str, &str); 14] = [
    ("success", "normal"),
    ("success", "discovery"),
    ("failure", "auth_failed"),
    ("failure", "target_not_found"),
    ("failure", "not_authorized"),
    ("failure", "bad_initiator_name"),
    ("failure", "missing_parameter"),
    ("failure", "protocol_error"),
    ("failure", "unsupported_version"),
    ("failure", "too_many_connections"),
    ("failure", "session_does_not_exist"),
    ("failure", "service_unavailable"),
    ("failure", "admission_limit"),
    ("failure", "abandoned"),
];

impl LoginEnd {
    fn index(self) -> usize {
        match self {
            LoginEnd::Normal => 0,
            LoginEnd::Discovery => 1,
            LoginEnd::Refused(s) => match s {
                LoginStatus::AuthFailed => 2,
                LoginStatus::TargetNotFound => 3,
                LoginStatus::NotAuthorized => 4,
                LoginStatus::BadInitiatorName => 5,
                LoginStatus::MissingParameter => 6,
                LoginStatus::InitiatorError | LoginStatus::InvalidDuringLogin => 7,
                LoginStatus::UnsupportedVersion => 8,
                LoginStatus::TooManyConnections => 9,
                LoginStatus::SessionDoesNotExist => 10,
                LoginStatus::ServiceUnavailable => 11,
            },
            LoginEnd::Admission => 12,
            LoginEnd::Abandoned => 13,
        }
    }
}

/// One counter per [`OUTCOMES`] entry.
#[derive(Debug, Default)]
pub struct LoginCounters([AtomicU64; OUTCOMES.len()]);

impl LoginCounters {
    pub fn count(&self, end: LoginEnd) {
        self.0[end.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// (result, reason, logins) for every outcome, zeros included.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        OUTCOMES
            .iter()
            .zip(&self.0)
            .map(|(&(result, reason), n)| (result, reason, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter() {
        let c = LoginCounters::default();
        let ends = [
            LoginEnd::Normal,
            LoginEnd::Discovery,
            LoginEnd::Refused(LoginStatus::AuthFailed),
            LoginEnd::Refused(LoginStatus::TargetNotFound),
            LoginEnd::Refused(LoginStatus::NotAuthorized),
            LoginEnd::Refused(LoginStatus::BadInitiatorName),
            LoginEnd::Refused(LoginStatus::MissingParameter),
            LoginEnd::Refused(LoginStatus::InitiatorError),
            LoginEnd::Refused(LoginStatus::UnsupportedVersion),
            LoginEnd::Refused(LoginStatus::TooManyConnections),
            LoginEnd::Refused(LoginStatus::SessionDoesNotExist),
            LoginEnd::Refused(LoginStatus::ServiceUnavailable),
            LoginEnd::Admission,
            LoginEnd::Abandoned,
        ];
        for (i, e) in ends.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
            for _ in 0..=i {
                c.count(*e);
            }
        }
        c.count(LoginEnd::Refused(LoginStatus::InvalidDuringLogin));
        let s = c.snapshot();
        assert_eq!(s[0], ("success", "normal", 1));
        assert_eq!(s[7], ("failure", "protocol_error", 9));
        assert_eq!(s[13], ("failure", "abandoned", 14));
    }
}
