//! Login/Text data segments (RFC 7143 §6): `key=value` pairs separated by
//! NUL bytes, possibly split across PDUs with the C (continue) bit. The
//! [`TextAccumulator`] joins continued segments (with a size cap), and
//! [`parse_pairs`] splits the result into ordered pairs, rejecting malformed
//! ones and keys sent twice.

use std::collections::HashSet;

use thiserror::Error;

/// Longest key name RFC 7143 §6.1 allows.
pub const MAX_KEY_LEN: usize = 63;
/// Longest accepted value (SendTargets answers are built, not parsed; the
/// largest value an initiator legitimately sends is a CHAP challenge).
pub const MAX_VALUE_LEN: usize = 8192;
/// Cap on one joined text sequence, to bound memory a peer can make us hold.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum TextError {
    #[error("pair without '=': {0:?}")]
    MissingEquals(String),
    #[error("empty or invalid key")]
    BadKey,
    #[error("key {0} longer than 63 bytes")]
    KeyTooLong(String),
    #[error("value of {0} too long")]
    ValueTooLong(String),
    #[error("value of {0} is not UTF-8")]
    NotUtf8(String),
    #[error("key {0} sent more than once")]
    Duplicate(String),
    #[error("text sequence longer than {MAX_TEXT_LEN} bytes")]
    TooLong,
}

/// One `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub value: String,
}

impl Pair {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Pair {
        Pair {
            key: key.into(),
            value: value.into(),
        }
    }
}

fn valid_key_byte(b: u8) -> bool {
    // RFC 7143 §6.1: letters, digits, '.', '-', '+', '@', '_'.
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_')
}

/// Split a complete text sequence into pairs. Trailing NULs and empty
/// entries between NULs are tolerated (some initiators pad). A key sent
/// twice is an error (RFC 7143 §6.1).
pub fn parse_pairs(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    parse_inner(data, false)
}

/// Like [`parse_pairs`] but repeated keys are kept: SendTargets answers
/// repeat TargetName and TargetAddress.
pub fn parse_list(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    parse_inner(data, true)
}

fn parse_inner(data: &[u8], allow_dup: bool) -> Result<Vec<Pair>, TextError> {
    let mut out: Vec<Pair> = Vec::new();
    // Hashed so that a sequence of many keys costs linear time, not a
    // comparison with every earlier key.
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            return Err(TextError::MissingEquals(
                String::from_utf8_lossy(&item[..item.len().min(64)]).into_owned(),
            ));
        };
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        if k.is_empty() || !k.iter().all(|&b| valid_key_byte(b)) {
            return Err(TextError::BadKey);
        }
        // Only ASCII bytes passed the check above, so this cannot fail.
        let key = String::from_utf8_lossy(k).into_owned();
        if k.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong(key));
        }
        if v.len() > MAX_VALUE_LEN {
            return Err(TextError::ValueTooLong(key));
        }
        let value = match std::str::from_utf8(v) {
            Ok(s) => s.to_owned(),
            Err(_) => return Err(TextError::NotUtf8(key)),
        };
        if !allow_dup && !seen.insert(k) {
            return Err(TextError::Duplicate(key));
        }
        out.push(Pair { key, value });
    }
    Ok(out)
}

/// Append `key=value\0`.
pub fn push_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// Encode pairs into a data segment.
pub fn encode_pairs(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pairs {
        push_pair(&mut out, &p.key, &p.value);
    }
    out
}

/// Joins the data segments of a Login or Text request sequence split with
/// the C bit.
#[derive(Debug, Default)]
pub struct TextAccumulator {
    buf: Vec<u8>,
}

impl TextAccumulator {
    /// Add one PDU's data. Returns the complete sequence when `cont` is
    /// false (and resets), `None` while more PDUs are expected.
    pub fn push(&mut self, data: &[u8], cont: bool) -> Result<Option<Vec<u8>>, TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            self.buf.clear();
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        if cont {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }

    /// True while a continued sequence is open.
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Splits a long answer into data segments of at most `max` bytes for
/// responses with the C bit (the split may fall inside a pair).
pub fn chunks(data: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    data.chunks(max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        type Case = (
            &'static [u8],
            Result<Vec<(&'static str, &'static str)>, TextError>,
        );
        let cases: Vec<Case> = vec![
            (b"A=1\0B=two\0", Ok(vec![("A", "1"), ("B", "two")])),
            (b"A=1", Ok(vec![("A", "1")])),
            (b"A=\0", Ok(vec![("A", "")])),
            (b"A=b=c\0", Ok(vec![("A", "b=c")])),
            (b"\0\0A=1\0\0", Ok(vec![("A", "1")])),
            (b"", Ok(vec![])),
            (b"A\0", Err(TextError::MissingEquals("A".into()))),
            (b"=1\0", Err(TextError::BadKey)),
            (b"A B=1\0", Err(TextError::BadKey)),
            (b"A=1\0A=2\0", Err(TextError::Duplicate("A".into()))),
            (b"A=\xff\0", Err(TextError::NotUtf8("A".into()))),
        ];
        for (input, want) in cases {
            let got = parse_pairs(input)
                .map(|v| v.into_iter().map(|p| (p.key, p.value)).collect::<Vec<_>>());
            let want = want.map(|v| {
                v.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn list_keeps_repeated_keys() {
        let l = parse_list(b"TargetName=a\0TargetAddress=x\0TargetName=b\0").unwrap();
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn long_key_and_value() {
        let mut k = vec![b'K'; 64];
        k.extend_from_slice(b"=1");
        assert!(matches!(parse_pairs(&k), Err(TextError::KeyTooLong(_))));
        let mut v = b"K=".to_vec();
        v.extend(std::iter::repeat_n(b'x', MAX_VALUE_LEN + 1));
        assert!(matches!(parse_pairs(&v), Err(TextError::ValueTooLong(_))));
    }

    #[test]
    fn accumulator_joins_split_pairs() {
        let mut acc = TextAccumulator::default();
        assert_eq!(acc.push(b"Initiator", true).unwrap(), None);
        assert!(acc.in_progress());
        let all = acc.push(b"Name=iqn.x\0", false).unwrap().unwrap();
        assert_eq!(
            parse_pairs(&all).unwrap(),
            vec![Pair::new("InitiatorName", "iqn.x")]
        );
        assert!(!acc.in_progress());
    }

    #[test]
    fn accumulator_caps_size() {
        let mut acc = TextAccumulator::default();
        let big = vec![b'a'; 40 * 1024];
        assert!(acc.push(&big, true).unwrap().is_none());
        assert_eq!(acc.push(&big, true), Err(TextError::TooLong));
    }

    #[test]
    fn encode_round_trip() {
        let pairs = vec![Pair::new("A", "1"), Pair::new("TargetName", "iqn.t")];
        assert_eq!(parse_pairs(&encode_pairs(&pairs)).unwrap(), pairs);
        let e = encode_pairs(&pairs);
        let joined: Vec<u8> = chunks(&e, 5).flatten().copied().collect();
        assert_eq!(joined, e);
    }
}

#[cfg(test)]
pub(crate) mod scaling {
    use super::*;
    use std::time::{Duration, Instant};

    /// `n` (at most 62^3) distinct three-letter keys in one text sequence.
    pub(crate) fn many_keys(n: usize) -> Vec<u8> {
        const ABC: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut out = Vec::new();
        for i in 0..n {
            let k = [ABC[i % 62], ABC[i / 62 % 62], ABC[i / 3844 % 62]];
            push_pair(&mut out, std::str::from_utf8(&k).unwrap(), "1");
        }
        out
    }

    /// Best of five runs each of `a` and `b`, interleaved so both see the
    /// same load.
    pub(crate) fn best_of_five(mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        let (mut ta, mut tb) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            ta = ta.min(time(&mut a));
            tb = tb.min(time(&mut b));
        }
        (ta, tb)
    }

    #[test]
    fn parsing_many_keys_is_linear() {
        // 64 KiB (MAX_TEXT_LEN) holds about 11,000 such keys. With
        // duplicate detection comparing each key with every earlier one,
        // 10x the keys cost 100x the time (about 300 ms for 10,000 in a
        // debug build); linear about 10x. Fail past 30x plus a floor, far
        // from both on a busy machine.
        let small = many_keys(1_000);
        let big = many_keys(10_000);
        assert!(big.len() <= MAX_TEXT_LEN);
        let (t_small, t_big) = best_of_five(
            || assert_eq!(parse_pairs(&small).unwrap().len(), 1_000),
            || assert_eq!(parse_pairs(&big).unwrap().len(), 10_000),
        );
        assert!(
            t_big < t_small * 30 + Duration::from_millis(20),
            "1,000 keys: {t_small:?}, 10,000 keys: {t_big:?}"
        );
    }
}
