//! The qcow2 header (cluster 0): parsing and validating the fixed fields,
//! the v3 feature bitmaps and the header extensions, and serializing the
//! header of a new image. Every field comes from an untrusted file, so every
//! offset and length is checked here before the rest of the engine uses it.

use std::io;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_EXTERNAL_DATA: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION_TYPE: u64 = 1 << 3;
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;

const EXT_END: u32 = 0;
pub(super) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Byte offset of `autoclear_features` (rewritten when opening for write).
pub const AUTOCLEAR_OFFSET: u64 = 88;
/// Byte offset of `refcount_table_offset`, followed by `refcount_table_clusters`.
pub const REFCOUNT_TABLE_FIELD_OFFSET: u64 = 48;

/// QEMU's limits; larger tables are refused rather than allocated blindly.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

/// Why an image can't be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    #[error("unsupported qcow2 version {0} (2 and 3 are supported)")]
    Version(u32),
    #[error("invalid qcow2 header: {0}")]
    Invalid(String),
    #[error("image uses unsupported incompatible feature(s): {0}")]
    Incompatible(String),
    #[error("encrypted qcow2 images are not supported")]
    Encrypted,
    #[error("image is marked corrupt; repair it with `qemu-img check -r all` first")]
    Corrupt,
    #[error("image is dirty (lazy refcounts); repair it with `qemu-img check -r all` before opening it writable")]
    Dirty,
    #[error("backing file {0}")]
    Backing(String),
    #[error("invalid argument: {0}")]
    Argument(String),
}

impl From<Qcow2Error> for io::Error {
    fn from(e: Qcow2Error) -> io::Error {
        match e {
            Qcow2Error::Io(e) => e,
            Qcow2Error::Argument(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

fn invalid(msg: impl Into<String>) -> Qcow2Error {
    Qcow2Error::Invalid(msg.into())
}

/// The parsed header of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// (type, bit, name) from the feature name table, for error messages.
    pub feature_names: Vec<(u8, u8, String)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

impl Header {
    /// Size of the fixed part that must be read to learn the cluster size.
    pub const V2_LEN: usize = 72;

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parse and validate. `buf` holds the start of the file: at least the
    /// whole first cluster, or the whole file when it is shorter.
    pub fn parse(buf: &[u8]) -> Result<Header, Qcow2Error> {
        if buf.len() < Self::V2_LEN {
            return Err(if buf.len() >= 4 && buf[..4] != MAGIC {
                Qcow2Error::BadMagic
            } else {
                invalid("file shorter than the header")
            });
        }
        if buf[..4] != MAGIC {
            return Err(Qcow2Error::BadMagic);
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Version(version));
        }
        let cluster_bits = be32(buf, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(format!(
                "cluster_bits {cluster_bits} outside 9..=21"
            )));
        }
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: Self::V2_LEN as u32,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
        };
        let cluster = &buf[..buf.len().min(cs as usize)];
        if version == 3 {
            if cluster.len() < 104 {
                return Err(invalid("v3 header truncated"));
            }
            h.incompatible = be64(buf, 72);
            h.compatible = be64(buf, 80);
            h.autoclear = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104
                || !h.header_length.is_multiple_of(8)
                || h.header_length as usize > cluster.len()
            {
                return Err(invalid(format!("header_length {}", h.header_length)));
            }
            if h.header_length > 104 {
                h.compression_type = buf[104];
            }
        }
        if h.refcount_order > 6 {
            return Err(invalid(format!("refcount_order {}", h.refcount_order)));
        }
        h.parse_extensions(cluster)?;
        h.check_features()?;
        if h.crypt_method != 0 {
            return Err(Qcow2Error::Encrypted);
        }
        h.check_tables(cs)?;
        h.parse_backing_name(cluster, be64(buf, 8), be32(buf, 16))?;
        Ok(h)
    }

    fn parse_extensions(&mut self, cluster: &[u8]) -> Result<(), Qcow2Error> {
        let mut at = self.header_length as usize;
        while at + 8 <= cluster.len() {
            let kind = be32(cluster, at);
            let len = be32(cluster, at + 4) as usize;
            if kind == EXT_END {
                return Ok(());
            }
            let data = cluster
                .get(at + 8..(at + 8).saturating_add(len))
                .ok_or_else(|| invalid(format!("header extension {kind:#x} overruns cluster 0")))?;
            match kind {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        std::str::from_utf8(data)
                            .map_err(|_| invalid("backing format is not UTF-8"))?
                            .to_owned(),
                    );
                }
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let name = &e[2..];
                        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                        let name = String::from_utf8_lossy(&name[..end]).into_owned();
                        self.feature_names.push((e[0], e[1], name));
                    }
                }
                // Bitmaps, encryption and external data are covered by
                // feature bits; unknown extensions may be ignored.
                _ => {}
            }
            at = at + 8 + len.div_ceil(8) * 8;
        }
        Ok(())
    }

    fn feature_name(&self, kind: u8, bit: u32) -> String {
        self.feature_names
            .iter()
            .find(|(t, b, _)| *t == kind && u32::from(*b) == bit)
            .map(|(_, _, n)| n.clone())
            .unwrap_or_else(|| format!("unknown bit {bit}"))
    }

    fn check_features(&self) -> Result<(), Qcow2Error> {
        let mut bad = Vec::new();
        for bit in 0..64u32 {
            let mask = 1u64 << bit;
            if self.incompatible & mask == 0 {
                continue;
            }
            match mask {
                INCOMPAT_DIRTY | INCOMPAT_CORRUPT => {}
                // Deflate is the default; only a non-zero type is foreign.
                INCOMPAT_COMPRESSION_TYPE if self.compression_type == 0 => {}
                INCOMPAT_COMPRESSION_TYPE => bad.push(format!(
                    "compression type {} (only deflate)",
                    self.compression_type
                )),
                INCOMPAT_EXTERNAL_DATA => bad.push("external data file".to_owned()),
                INCOMPAT_EXTENDED_L2 => bad.push("extended L2 entries".to_owned()),
                _ => bad.push(self.feature_name(0, bit)),
            }
        }
        if self.compression_type != 0 && !bad.iter().any(|b| b.starts_with("compression")) {
            bad.push(format!("compression type {}", self.compression_type));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Qcow2Error::Incompatible(bad.join(", ")))
        }
    }

    fn check_tables(&self, cs: u64) -> Result<(), Qcow2Error> {
        let aligned = |off: u64| off.is_multiple_of(cs);
        if !aligned(self.l1_table_offset) || !aligned(self.refcount_table_offset) {
            return Err(invalid("table offset not cluster aligned"));
        }
        if self.refcount_table_offset == 0 || self.refcount_table_clusters == 0 {
            return Err(invalid("no refcount table"));
        }
        if u64::from(self.refcount_table_clusters) * cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(invalid("refcount table too large"));
        }
        if u64::from(self.l1_size) * 8 > MAX_L1_BYTES {
            return Err(invalid("L1 table too large"));
        }
        // The L1 table must map the whole virtual disk.
        let l2_entries = cs / 8;
        let guest_clusters = self.size.div_ceil(cs);
        if u64::from(self.l1_size) < guest_clusters.div_ceil(l2_entries) {
            return Err(invalid("L1 table too small for the disk size"));
        }
        if self.l1_size > 0 && self.l1_table_offset == 0 {
            return Err(invalid("L1 table at offset 0"));
        }
        if self.nb_snapshots > 0 && !aligned(self.snapshots_offset) {
            return Err(invalid("snapshot table not cluster aligned"));
        }
        Ok(())
    }

    fn parse_backing_name(&mut self, cluster: &[u8], off: u64, len: u32) -> Result<(), Qcow2Error> {
        if off == 0 {
            return Ok(());
        }
        if len == 0 || len > 1023 {
            return Err(invalid(format!("backing file name length {len}")));
        }
        let start = usize::try_from(off).map_err(|_| invalid("backing name offset"))?;
        let name = cluster
            .get(start..start.saturating_add(len as usize))
            .ok_or_else(|| invalid("backing file name outside cluster 0"))?;
        let name = std::str::from_utf8(name).map_err(|_| invalid("backing name is not UTF-8"))?;
        self.backing_file = Some(name.to_owned());
        Ok(())
    }

    /// Serialize a v3 header (no extensions, no backing file) into `out`,
    /// which must be zeroed and at least 112 bytes; the zero bytes after the
    /// header end the extension area.
    pub fn write_v3(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&3u32.to_be_bytes());
        out[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        out[24..32].copy_from_slice(&self.size.to_be_bytes());
        out[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        out[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        out[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        out[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        out[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
        out[80..88].copy_from_slice(&self.compatible.to_be_bytes());
        out[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
        out[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
        out[100..104].copy_from_slice(&112u32.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let h = Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            crypt_method: 0,
            l1_size: 2,
            l1_table_offset: 3 << 16,
            refcount_table_offset: 1 << 16,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: 112,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
        };
        let mut b = vec![0u8; 1 << 16];
        h.write_v3(&mut b);
        b
    }

    #[test]
    fn round_trip() {
        let h = Header::parse(&sample()).unwrap();
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.backing_file, None);
    }

    #[test]
    fn unknown_incompatible_bit_is_refused() {
        let mut b = sample();
        b[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
        let e = Header::parse(&b).unwrap_err();
        assert!(
            matches!(e, Qcow2Error::Incompatible(ref s) if s.contains("bit 40")),
            "{e}"
        );
    }

    #[test]
    fn extended_l2_is_refused() {
        let mut b = sample();
        b[72..80].copy_from_slice(&INCOMPAT_EXTENDED_L2.to_be_bytes());
        assert!(matches!(
            Header::parse(&b),
            Err(Qcow2Error::Incompatible(_))
        ));
    }

    #[test]
    fn bad_fields_are_errors_not_panics() {
        let mut b = sample();
        b[20..24].copy_from_slice(&30u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
        let mut b = sample();
        b[100..104].copy_from_slice(&0xffff_fff8u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
        let mut b = sample();
        // An extension whose length runs past the cluster.
        b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Header::parse(&b).is_err());
        let mut b = sample();
        // One L1 entry maps 512 MiB at 64K clusters: too small for 1 GiB.
        b[36..40].copy_from_slice(&1u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
        assert!(Header::parse(&b[..50]).is_err());
        assert!(matches!(Header::parse(b"nope"), Err(Qcow2Error::BadMagic)));
    }

    #[test]
    fn backing_format_extension() {
        let mut b = sample();
        b[112..116].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        b[116..120].copy_from_slice(&3u32.to_be_bytes());
        b[120..123].copy_from_slice(b"raw");
        let name = b"base.img";
        b[8..16].copy_from_slice(&200u64.to_be_bytes());
        b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        b[200..208].copy_from_slice(name);
        let h = Header::parse(&b).unwrap();
        assert_eq!(h.backing_format.as_deref(), Some("raw"));
        assert_eq!(h.backing_file.as_deref(), Some("base.img"));
    }
}
