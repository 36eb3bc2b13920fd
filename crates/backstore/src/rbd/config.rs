//! tcmu-runner's rbd configuration string (after `rbd/`):
//! `pool/image[@snap][;conf=FILE][;id=CLIENT][;osd_op_timeout=S][;alua_group=N]
//! [;stream_writes=0|1]`.
//!
//! `stream_writes=1` is rtarget's own too: WRITEs reach librbd burst by
//! burst as their data arrives (`Backstore::streams_writes`). Off by
//! default: on a single-node cluster sharing two cores with the target it
//! costs more (each piece is an OSD op) than its overlap gains
//! (BENCHMARKS.md, "Session 10 ... s10-rbdwrite").
//!
//! `alua_group=N` is rtarget's own: this daemon is one of several gateways
//! serving the image, and N is the id of its ALUA target port group; the
//! image's exclusive lock then decides which group is active/optimized
//! ([`super::gateway`], docs/rbd-gateways.md).

use std::time::Duration;

/// Used when the string sets no `osd_op_timeout`: a gateway must fail an
/// I/O to a dead OSD rather than hang the initiator's command forever
/// (librados' own default is 0, no timeout).
pub const DEFAULT_OSD_OP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdConfig {
    pub pool: String,
    pub image: String,
    /// Serving a snapshot: always read-only.
    pub snap: Option<String>,
    /// ceph.conf to read (default: librados' search, $CEPH_CONF first).
    pub conf: Option<String>,
    /// The client id (`gw` for `client.gw`; default `admin`).
    pub id: Option<String>,
    /// rados_osd_op_timeout and client_mount_timeout.
    pub osd_op_timeout: Duration,
    /// This gateway's target port group id (multi-gateway mode).
    pub alua_group: Option<u16>,
    /// Take WRITEs piece by piece (`stream_writes=1`).
    pub stream_writes: bool,
}

impl RbdConfig {
    pub fn parse(s: &str) -> Result<RbdConfig, String> {
        let usage =
            "expected pool/image[@snap][;conf=FILE][;id=CLIENT][;osd_op_timeout=S][;alua_group=N][;stream_writes=0|1]";
        let mut parts = s.split(';');
        let spec = parts.next().unwrap_or("");
        let (pool, rest) = spec
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: no pool/image; {usage}"))?;
        let (image, snap) = match rest.split_once('@') {
            Some((i, sn)) => (i, Some(sn)),
            None => (rest, None),
        };
        // Names go to C as strings: no NUL, nothing that would change the
        // meaning of the spec.
        let ok = |n: &str| !n.is_empty() && !n.contains(['/', '@', '\0', ';']);
        if !ok(pool) || !ok(image) || snap.is_some_and(|n| !ok(n)) {
            return Err(format!("{s:?}: bad pool, image or snapshot name; {usage}"));
        }
        let mut cfg = RbdConfig {
            pool: pool.into(),
            image: image.into(),
            snap: snap.map(Into::into),
            conf: None,
            id: None,
            osd_op_timeout: DEFAULT_OSD_OP_TIMEOUT,
            alua_group: None,
            stream_writes: false,
        };
        for kv in parts.filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{s:?}: {kv:?} is not KEY=VALUE; {usage}"))?;
            if v.is_empty() || v.contains('\0') {
                return Err(format!("{s:?}: empty value for {k}"));
            }
            match k {
                "conf" if v.starts_with('/') => cfg.conf = Some(v.into()),
                "conf" => return Err(format!("{s:?}: conf={v:?} must be an absolute path")),
                "id" => cfg.id = Some(v.into()),
                "osd_op_timeout" => {
                    cfg.osd_op_timeout = match v.parse::<u64>() {
                        Ok(n) if (1..=86_400).contains(&n) => Duration::from_secs(n),
                        _ => {
                            return Err(format!(
                                "{s:?}: osd_op_timeout={v:?} is not 1..86400 seconds"
                            ))
                        }
                    }
                }
                // 0 is the default group, which every LUN is in unless it
                // names another: it cannot tell the gateways apart.
                "alua_group" => match v.parse::<u16>() {
                    Ok(n) if n > 0 => cfg.alua_group = Some(n),
                    _ => return Err(format!("{s:?}: alua_group={v:?} is not 1..65535")),
                },
                "stream_writes" => match v {
                    "0" => cfg.stream_writes = false,
                    "1" => cfg.stream_writes = true,
                    _ => return Err(format!("{s:?}: stream_writes={v:?} is not 0 or 1")),
                },
                _ => {
                    return Err(format!(
                        "{s:?}: unknown key {k:?} (known: conf, id, osd_op_timeout, alua_group, stream_writes)"
                    ))
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcmu_runner_cfgstrings() {
        let c = RbdConfig::parse("rbd/disk1").unwrap();
        assert_eq!((c.pool.as_str(), c.image.as_str()), ("rbd", "disk1"));
        assert_eq!((c.snap, c.conf, c.id), (None, None, None));
        assert_eq!(c.osd_op_timeout, DEFAULT_OSD_OP_TIMEOUT);
        let c = RbdConfig::parse("p/i@s1;conf=/etc/ceph/x.conf;id=gw;osd_op_timeout=5").unwrap();
        assert_eq!(c.snap.as_deref(), Some("s1"));
        assert_eq!(c.conf.as_deref(), Some("/etc/ceph/x.conf"));
        assert_eq!(c.id.as_deref(), Some("gw"));
        assert_eq!(c.osd_op_timeout, Duration::from_secs(5));
        assert_eq!(c.alua_group, None);
        let c = RbdConfig::parse("p/i;alua_group=2").unwrap();
        assert_eq!(c.alua_group, Some(2));
        assert!(!c.stream_writes);
        assert!(
            RbdConfig::parse("p/i;stream_writes=1")
                .unwrap()
                .stream_writes
        );
        assert!(
            !RbdConfig::parse("p/i;stream_writes=0")
                .unwrap()
                .stream_writes
        );
        for bad in [
            "",
            "disk",
            "/disk",
            "rbd/",
            "rbd/a/b",
            "rbd/a@",
            "rbd/a;conf=rel.conf",
            "rbd/a;osd_op_timeout=0",
            "rbd/a;osd_op_timeout=x",
            "rbd/a;id=",
            "rbd/a;cache=on",
            "rbd/a;noequals",
            "rbd/a;alua_group=0",
            "rbd/a;alua_group=65536",
            "rbd/a;stream_writes=yes",
        ] {
            assert!(RbdConfig::parse(bad).is_err(), "{bad:?}");
        }
    }
}
