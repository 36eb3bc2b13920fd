//! targetcli-style command arguments: positional words and `key=value`
//! pairs bound to a verb's parameter list (`create mydisk1 /f 1G` and
//! `create name=mydisk1 file_or_dev=/f size=1G` mean the same), plus the
//! value parsers targetcli uses (sizes with units, booleans, `lunN`).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// Arguments as they arrive from the CLI (`argv`) or the API (`args`).
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub positional: Vec<String>,
    pub named: BTreeMap<String, String>,
}

impl Args {
    /// Split raw words: `k=v` is named, anything else positional.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Args> {
        let mut a = Args::default();
        for w in words {
            let w = w.as_ref();
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains('/') => {
                    if a.named.insert(k.to_string(), v.to_string()).is_some() {
                        bail!("argument {k} given twice");
                    }
                }
                _ => a.positional.push(w.to_string()),
            }
        }
        Ok(a)
    }

    /// Merge an API `args` object (values may be strings, numbers or booleans).
    pub fn add_json(&mut self, obj: &serde_json::Map<String, Value>) -> Result<()> {
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => bail!("argument {k}: {other} is not a string, number or boolean"),
            };
            if self.named.insert(k.clone(), s).is_some() {
                bail!("argument {k} given twice");
            }
        }
        Ok(())
    }

    /// Bind to `params` (in positional order); the first `required` are
    /// mandatory. Unknown names, extra words and missing ones are errors
    /// that name the verb's signature.
    pub fn bind(&self, verb: &str, params: &[&str], required: usize) -> Result<Bound> {
        let sig = signature(verb, params, required);
        if self.positional.len() > params.len() {
            bail!(
                "too many arguments ({} given, {verb} takes at most {}); usage: {sig}",
                self.positional.len(),
                params.len()
            );
        }
        let mut values = BTreeMap::new();
        for (p, v) in params.iter().zip(&self.positional) {
            values.insert(p.to_string(), v.clone());
        }
        for (k, v) in &self.named {
            if !params.contains(&k.as_str()) {
                bail!("unknown parameter {k:?}; usage: {sig}");
            }
            if values.insert(k.clone(), v.clone()).is_some() {
                bail!("parameter {k} given both by position and by name");
            }
        }
        for p in &params[..required] {
            if !values.contains_key(*p) {
                bail!("missing parameter {p}; usage: {sig}");
            }
        }
        Ok(Bound(values))
    }
}

fn signature(verb: &str, params: &[&str], required: usize) -> String {
    let mut s = verb.to_string();
    for (i, p) in params.iter().enumerate() {
        if i < required {
            s.push_str(&format!(" {p}"));
        } else {
            s.push_str(&format!(" [{p}]"));
        }
    }
    s
}

/// Bound parameters by name.
#[derive(Debug)]
pub struct Bound(BTreeMap<String, String>);

impl Bound {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn req(&self, k: &str) -> Result<&str> {
        self.get(k).ok_or_else(|| anyhow!("missing parameter {k}"))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.get(k).map(|v| parse_bool(k, v)).transpose()
    }
}

/// targetcli's booleans: true/false, yes/no, on/off, 1/0.
pub fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "enable" | "enabled" => Ok(true),
        "0" | "false" | "no" | "off" | "disable" | "disabled" => Ok(false),
        _ => bail!("{name}: {v:?} is not a boolean (true/false, yes/no, 1/0)"),
    }
}

/// targetcli's size syntax: bytes, or a number with k/M/G/T (optionally
/// followed by B or iB), powers of 1024 as LIO uses them.
pub fn parse_size(v: &str) -> Result<u64> {
    let t = v.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let mult: u64 = match unit
        .trim()
        .trim_end_matches(['b', 'B'])
        .trim_end_matches('i')
        .to_ascii_lowercase()
        .as_str()
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => bail!("size {v:?}: unknown unit (bytes, or a number with k, M, G or T; e.g. 64M, 8G)"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("size {v:?} is not a number with an optional unit (e.g. 64M, 8G)"))?;
    let bytes = n * mult as f64;
    if !(1.0..=(1u64 << 60) as f64).contains(&bytes) {
        bail!("size {v:?} is out of range (1 byte to 1 EiB; e.g. 8G)");
    }
    Ok(bytes as u64)
}

/// `3` or `lun3` (also `tpg2` with that prefix, `mapped_lun1`).
pub fn parse_index(prefix: &str, v: &str) -> Result<u64> {
    v.strip_prefix(prefix)
        .unwrap_or(v)
        .parse()
        .map_err(|_| anyhow!("{v:?} is not a number or {prefix}N"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_and_named_bind_alike() {
        let p = ["name", "file_or_dev", "size", "write_back"];
        let a = Args::from_words(&["d1", "/f", "size=1G"]).unwrap();
        let b = a.bind("create", &p, 2).unwrap();
        assert_eq!(
            (b.get("name"), b.get("file_or_dev"), b.get("size")),
            (Some("d1"), Some("/f"), Some("1G"))
        );
        let e = Args::from_words(&["d1"])
            .unwrap()
            .bind("create", &p, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing parameter file_or_dev")
                && e.contains("create name file_or_dev [size]"),
            "{e}"
        );
        let e = Args::from_words(&["bogus=1"])
            .unwrap()
            .bind("create", &p, 0)
            .unwrap_err();
        assert!(e.to_string().contains("unknown parameter \"bogus\""));
        assert!(Args::from_words(&["a", "b", "c", "d", "e"])
            .unwrap()
            .bind("create", &p, 0)
            .is_err());
        assert!(Args::from_words(&["d1", "name=x"])
            .unwrap()
            .bind("create", &p, 0)
            .is_err());
        // Paths with '=' after a slash stay positional.
        let a = Args::from_words(&["/a=b"]).unwrap();
        assert_eq!(a.positional, ["/a=b"]);
    }

    #[test]
    fn sizes_bools_indexes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_bool("x", "Yes").unwrap());
        assert!(!parse_bool("x", "0").unwrap());
        assert!(parse_bool("x", "maybe").is_err());
        assert_eq!(parse_index("lun", "lun7").unwrap(), 7);
        assert_eq!(parse_index("lun", "7").unwrap(), 7);
        assert!(parse_index("lun", "lunx").is_err());
    }
}
