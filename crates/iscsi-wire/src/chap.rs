//! CHAP authentication, target side (RFC 7143 §12.1.3, RFC 1994), with MD5
//! (CHAP_A 5) or SHA-256 (CHAP_A 7, as LIO and open-iscsi offer it),
//! whichever the initiator lists first:
//! the exchange of CHAP_A, CHAP_I/CHAP_C and CHAP_N/CHAP_R keys, one-way
//! and mutual. Sans-I/O: the caller supplies the identifier and challenge
//! bytes (from a random source) and feeds each request's CHAP keys.

use md5::{Digest, Md5};
use sha2::Sha256;
use thiserror::Error;

use crate::text::Pair;

/// Challenge length sent to initiators.
pub const CHALLENGE_LEN: usize = 16;
/// Largest binary value accepted from a peer.
const MAX_BINARY: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ChapError {
    #[error("no supported CHAP algorithm offered (MD5 5, SHA-256 7)")]
    NoAlgorithm,
    #[error("CHAP key {0} missing")]
    Missing(&'static str),
    #[error("CHAP value of {0} is malformed")]
    Malformed(&'static str),
    #[error("CHAP name or response does not match")]
    BadResponse,
    #[error("initiator asked for mutual CHAP but no target credentials are set")]
    NoMutualCredentials,
    #[error("initiator reflected the target's challenge")]
    Reflected,
    #[error("CHAP key after authentication completed")]
    Unexpected,
}

/// Configured secrets (targetcli `userid`/`password`/`mutual_userid`/
/// `mutual_password`). `Debug` hides the secrets so they never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    pub userid: String,
    pub password: String,
    pub mutual_userid: Option<String>,
    pub mutual_password: Option<String>,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("userid", &self.userid)
            .field("password", &"***")
            .field("mutual_userid", &self.mutual_userid)
            .field(
                "mutual_password",
                &self.mutual_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    WaitAlgorithm,
    WaitResponse,
    Done,
}

/// CHAP hash algorithms (CHAP_A values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapAlgorithm {
    Md5,
    Sha256,
}

impl ChapAlgorithm {
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha256 => 7,
        }
    }

    pub fn from_code(c: &str) -> Option<ChapAlgorithm> {
        match c.trim() {
            "5" => Some(ChapAlgorithm::Md5),
            "7" => Some(ChapAlgorithm::Sha256),
            _ => None,
        }
    }

    /// `HASH(id || secret || challenge)`.
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            ChapAlgorithm::Md5 => response(id, secret, challenge).to_vec(),
            ChapAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
        }
    }
}

/// Target side of one CHAP exchange.
#[derive(Debug, Clone)]
pub struct ChapServer {
    creds: ChapCredentials,
    alg: ChapAlgorithm,
    id: u8,
    challenge: [u8; CHALLENGE_LEN],
    state: State,
}

/// True for the keys CHAP owns (they bypass normal negotiation).
pub fn is_chap_key(key: &str) -> bool {
    matches!(key, "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R")
}

/// `MD5(id || secret || challenge)`.
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Encode binary as `0x` hex.
pub fn encode_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn b64_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decode an RFC 7143 binary value: `0x` hex (odd length allowed) or
/// `0b` base64.
pub fn decode_binary(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() < 3 || b.len() > 2 + MAX_BINARY * 2 || b[0] != b'0' {
        return None;
    }
    let body = &b[2..];
    match b[1] {
        b'x' | b'X' => {
            let mut out = Vec::with_capacity(body.len() / 2 + 1);
            let (first, rest) = if body.len() % 2 == 1 {
                (Some(body[0]), &body[1..])
            } else {
                (None, body)
            };
            if let Some(f) = first {
                out.push(hex_val(f)?);
            }
            for pair in rest.chunks(2) {
                out.push(hex_val(pair[0])? << 4 | hex_val(pair[1])?);
            }
            Some(out)
        }
        b'b' | b'B' => {
            let trimmed: &[u8] = {
                let mut t = body;
                while let [rest @ .., b'='] = t {
                    t = rest;
                }
                t
            };
            if body.len() - trimmed.len() > 2 {
                return None;
            }
            let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
            let mut acc = 0u32;
            let mut bits = 0;
            for &c in trimmed {
                acc = (acc << 6) | u32::from(b64_val(c)?);
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn get<'a>(pairs: &'a [Pair], k: &str) -> Option<&'a str> {
    pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str())
}

impl ChapServer {
    /// `id` and `challenge` must come from a random source.
    pub fn new(creds: ChapCredentials, id: u8, challenge: [u8; CHALLENGE_LEN]) -> ChapServer {
        ChapServer {
            creds,
            alg: ChapAlgorithm::Md5,
            id,
            challenge,
            state: State::WaitAlgorithm,
        }
    }

    /// The algorithm in use (MD5 until the initiator's CHAP_A picked one).
    pub fn algorithm(&self) -> ChapAlgorithm {
        self.alg
    }

    /// Authentication succeeded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Handle the CHAP keys of one login request (other keys are ignored);
    /// returns the keys to answer with.
    pub fn step(&mut self, pairs: &[Pair]) -> Result<Vec<Pair>, ChapError> {
        let any = pairs.iter().any(|p| is_chap_key(&p.key));
        match self.state {
            State::WaitAlgorithm => {
                let Some(a) = get(pairs, "CHAP_A") else {
                    if any {
                        return Err(ChapError::Missing("CHAP_A"));
                    }
                    return Ok(Vec::new());
                };
                // The initiator's order is its preference.
                let Some(alg) = a.split(',').find_map(ChapAlgorithm::from_code) else {
                    return Err(ChapError::NoAlgorithm);
                };
                self.alg = alg;
                self.state = State::WaitResponse;
                Ok(vec![
                    Pair::new("CHAP_A", alg.code().to_string()),
                    Pair::new("CHAP_I", self.id.to_string()),
                    Pair::new("CHAP_C", encode_hex(&self.challenge)),
                ])
            }
            State::WaitResponse => {
                let name = get(pairs, "CHAP_N").ok_or(ChapError::Missing("CHAP_N"))?;
                let r = get(pairs, "CHAP_R").ok_or(ChapError::Missing("CHAP_R"))?;
                let r = decode_binary(r).ok_or(ChapError::Malformed("CHAP_R"))?;
                let want =
                    self.alg
                        .response(self.id, self.creds.password.as_bytes(), &self.challenge);
                // Compare without an early exit on the first differing byte.
                let same = r.len() == want.len()
                    && r.iter().zip(want.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
                if name != self.creds.userid || !same {
                    return Err(ChapError::BadResponse);
                }
                let mut out = Vec::new();
                match (get(pairs, "CHAP_I"), get(pairs, "CHAP_C")) {
                    (None, None) => {}
                    (Some(i), Some(c)) => {
                        let i: u8 = i
                            .trim()
                            .parse()
                            .map_err(|_| ChapError::Malformed("CHAP_I"))?;
                        let c = decode_binary(c).ok_or(ChapError::Malformed("CHAP_C"))?;
                        if c == self.challenge {
                            return Err(ChapError::Reflected);
                        }
                        let (Some(mu), Some(mp)) =
                            (&self.creds.mutual_userid, &self.creds.mutual_password)
                        else {
                            return Err(ChapError::NoMutualCredentials);
                        };
                        out.push(Pair::new("CHAP_N", mu.clone()));
                        out.push(Pair::new(
                            "CHAP_R",
                            encode_hex(&self.alg.response(i, mp.as_bytes(), &c)),
                        ));
                    }
                    (None, Some(_)) => return Err(ChapError::Missing("CHAP_I")),
                    (Some(_), None) => return Err(ChapError::Missing("CHAP_C")),
                }
                self.state = State::Done;
                Ok(out)
            }
            State::Done => {
                if any {
                    Err(ChapError::Unexpected)
                } else {
                    Ok(Vec::new())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(mutual: bool) -> ChapCredentials {
        ChapCredentials {
            userid: "user".into(),
            password: "secretsecret".into(),
            mutual_userid: mutual.then(|| "target".into()),
            mutual_password: mutual.then(|| "tsecrettsecret".into()),
        }
    }

    fn p(k: &str, v: &str) -> Pair {
        Pair::new(k, v)
    }

    #[test]
    fn sha256_exchange_when_listed_first() {
        let mut s = ChapServer::new(creds(true), 7, [3; CHALLENGE_LEN]);
        let a = s.step(&[p("CHAP_A", "7,5")]).unwrap();
        assert_eq!(a[0], p("CHAP_A", "7"));
        let r = ChapAlgorithm::Sha256.response(7, b"secretsecret", &[3; CHALLENGE_LEN]);
        assert_eq!(r.len(), 32);
        // An MD5 answer does not pass a SHA-256 exchange.
        let md5 = encode_hex(&response(7, b"secretsecret", &[3; CHALLENGE_LEN]));
        let mut bad = s.clone();
        assert_eq!(
            bad.step(&[p("CHAP_N", "user"), p("CHAP_R", &md5)]),
            Err(ChapError::BadResponse)
        );
        let out = s
            .step(&[
                p("CHAP_N", "user"),
                p("CHAP_R", &encode_hex(&r)),
                p("CHAP_I", "9"),
                p("CHAP_C", "0x0102030405060708"),
            ])
            .unwrap();
        let want = ChapAlgorithm::Sha256.response(9, b"tsecrettsecret", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(out[1], p("CHAP_R", &encode_hex(&want)));
        assert!(s.is_done());
        // MD5 first in the list picks MD5.
        let mut m = ChapServer::new(creds(false), 1, [0; CHALLENGE_LEN]);
        assert_eq!(m.step(&[p("CHAP_A", "5,7")]).unwrap()[0], p("CHAP_A", "5"));
    }

    #[test]
    fn debug_hides_secrets() {
        let d = format!("{:?}", creds(true));
        assert!(!d.contains(&creds(true).password), "{d}");
        assert!(
            !d.contains(creds(true).mutual_password.as_deref().unwrap()),
            "{d}"
        );
    }

    #[test]
    fn binary_values() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("0x0102ff", Some(&[1, 2, 255])),
            ("0X1", Some(&[1])),
            ("0xabc", Some(&[0x0a, 0xbc])),
            ("0bAQL/", Some(&[1, 2, 255])),
            ("0bAQI=", Some(&[1, 2])),
            ("0x", None),
            ("0xzz", None),
            ("12", None),
            ("0b====", None),
        ];
        for (s, want) in cases {
            assert_eq!(decode_binary(s).as_deref(), *want, "{s}");
        }
        assert_eq!(encode_hex(&[0, 0xab]), "0x00ab");
    }

    #[test]
    fn one_way_exchange() {
        let ch = [7u8; CHALLENGE_LEN];
        let mut s = ChapServer::new(creds(false), 42, ch);
        assert!(s.step(&[p("AuthMethod", "CHAP")]).unwrap().is_empty());
        // SHA-1 (6) is not offered: MD5 is picked.
        let a = s.step(&[p("CHAP_A", "6,5")]).unwrap();
        assert_eq!(a[0], p("CHAP_A", "5"));
        assert_eq!(a[1], p("CHAP_I", "42"));
        assert_eq!(decode_binary(&a[2].value).unwrap(), ch);
        let r = encode_hex(&response(42, b"secretsecret", &ch));
        let out = s.step(&[p("CHAP_N", "user"), p("CHAP_R", &r)]).unwrap();
        assert!(out.is_empty());
        assert!(s.is_done());
        assert_eq!(s.step(&[p("CHAP_A", "5")]), Err(ChapError::Unexpected));
    }

    #[test]
    fn wrong_secret_or_name_fails() {
        let ch = [1u8; CHALLENGE_LEN];
        for (name, secret) in [("user", "wrongsecret!"), ("other", "secretsecret")] {
            let mut s = ChapServer::new(creds(false), 1, ch);
            s.step(&[p("CHAP_A", "5")]).unwrap();
            let r = encode_hex(&response(1, secret.as_bytes(), &ch));
            assert_eq!(
                s.step(&[p("CHAP_N", name), p("CHAP_R", &r)]),
                Err(ChapError::BadResponse)
            );
            assert!(!s.is_done());
        }
    }

    #[test]
    fn unsupported_algorithm() {
        let mut s = ChapServer::new(creds(false), 1, [0; CHALLENGE_LEN]);
        assert_eq!(s.step(&[p("CHAP_A", "6,8")]), Err(ChapError::NoAlgorithm));
    }

    #[test]
    fn mutual_exchange() {
        let ch = [3u8; CHALLENGE_LEN];
        let ich = [9u8; 20];
        let mut s = ChapServer::new(creds(true), 5, ch);
        s.step(&[p("CHAP_A", "5")]).unwrap();
        let r = encode_hex(&response(5, b"secretsecret", &ch));
        let out = s
            .step(&[
                p("CHAP_N", "user"),
                p("CHAP_R", &r),
                p("CHAP_I", "77"),
                p("CHAP_C", &encode_hex(&ich)),
            ])
            .unwrap();
        assert_eq!(out[0], p("CHAP_N", "target"));
        assert_eq!(
            decode_binary(&out[1].value).unwrap(),
            response(77, b"tsecrettsecret", &ich)
        );
    }

    #[test]
    fn mutual_errors() {
        let ch = [3u8; CHALLENGE_LEN];
        let r = encode_hex(&response(5, b"secretsecret", &ch));
        let mut s = ChapServer::new(creds(false), 5, ch);
        s.step(&[p("CHAP_A", "5")]).unwrap();
        assert_eq!(
            s.step(&[
                p("CHAP_N", "user"),
                p("CHAP_R", &r),
                p("CHAP_I", "1"),
                p("CHAP_C", "0x0102")
            ]),
            Err(ChapError::NoMutualCredentials)
        );
        let mut s = ChapServer::new(creds(true), 5, ch);
        s.step(&[p("CHAP_A", "5")]).unwrap();
        assert_eq!(
            s.step(&[
                p("CHAP_N", "user"),
                p("CHAP_R", &r),
                p("CHAP_I", "1"),
                p("CHAP_C", &encode_hex(&ch))
            ]),
            Err(ChapError::Reflected)
        );
    }
}
