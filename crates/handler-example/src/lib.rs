//! An example rtarget handler, `user:pattern`: a read-only device of any
//! size that stores nothing and computes every sector on read. Each
//! 512-byte sector starts with its own sector number and the seed (both
//! big-endian u64) followed by 496 bytes of a generator keyed by both, so
//! an initiator (or a test) can tell from any buffer which sector it really
//! got: useful to check offsets, multipath, caching layers and data
//! integrity end to end without storing a byte.
//!
//! It shows the whole handler API (docs/handlers.md): a [`Backstore`]
//! (size, capabilities, read, write refusal, flush, online resize) and a
//! [`Handler`] that parses the configuration string (`seed=N`, or empty
//! for seed 0) and is registered by name:
//!
//! ```
//! let mut registry = backstore::Registry::with_builtin();
//! registry.register(std::sync::Arc::new(handler_example::PatternHandler)).unwrap();
//! assert!(registry.get("pattern").is_some());
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backstore::{Backstore, Capabilities, Handler, HandlerError, OpenRequest, SizePolicy};

/// Sector size of the pattern (independent of the LU's block size).
pub const SECTOR: u64 = 512;

/// The bytes of sector `lba` for `seed`.
pub fn sector(lba: u64, seed: u64, out: &mut [u8; SECTOR as usize]) {
    out[..8].copy_from_slice(&lba.to_be_bytes());
    out[8..16].copy_from_slice(&seed.to_be_bytes());
    // splitmix64 of (lba, seed): cheap, and no two sectors repeat.
    let mut x = lba ^ seed.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    for chunk in out[16..].chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
    }
}

/// The read-only pattern device.
pub struct PatternBackstore {
    seed: u64,
    /// Grows online; reads check against it.
    size: AtomicU64,
}

impl PatternBackstore {
    pub fn new(size: u64, seed: u64) -> PatternBackstore {
        PatternBackstore {
            seed,
            size: AtomicU64::new(size),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "pattern devices are read-only",
    )
}

impl Backstore for PatternBackstore {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: false,
            write_zeroes: false,
            write_cache: false,
            read_only: true,
            rotational: false,
            optimal_io_size: 0,
            resize: true,
            crypto_erase: false,
            async_submit: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let size = self.size();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read at {offset}+{} beyond size {size}", buf.len()),
            ));
        }
        // Any offset works: copy the needed part of each covered sector.
        let mut s = [0u8; SECTOR as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (lba, within) = (pos / SECTOR, (pos % SECTOR) as usize);
            sector(lba, self.seed, &mut s);
            let n = (SECTOR as usize - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&s[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (new_size >= old).then_some(new_size)
            })
            .map(|_| ())
            .map_err(|old| backstore::refuse_shrink(old, new_size))
    }
}

/// `user:pattern`: config `seed=N` (or empty: seed 0); the size is required.
pub struct PatternHandler;

/// The seed a configuration string asks for.
pub fn parse_config(config: &str) -> Result<u64, HandlerError> {
    let c = config.trim();
    if c.is_empty() {
        return Ok(0);
    }
    c.strip_prefix("seed=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HandlerError::Config(format!("{c:?}: expected seed=N (N a u64) or nothing")))
}

impl Handler for PatternHandler {
    fn name(&self) -> &str {
        "pattern"
    }

    fn product(&self) -> &str {
        "PATTERN"
    }

    fn config_help(&self) -> &str {
        "seed=N (optional): every 512-byte sector holds its number, the seed and derived bytes"
    }

    fn size_policy(&self) -> SizePolicy {
        SizePolicy::Required
    }

    fn check_config(&self, config: &str) -> Result<(), HandlerError> {
        parse_config(config).map(|_| ())
    }

    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
        let seed = parse_config(req.config)?;
        let size = req
            .size
            .filter(|s| *s > 0)
            .ok_or_else(|| HandlerError::Size("a pattern device needs a size".into()))?;
        Ok(Arc::new(PatternBackstore::new(size, seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_describe_themselves_at_any_offset() {
        let p = PatternBackstore::new(1 << 20, 7);
        let mut whole = vec![0u8; 4096];
        p.read_at(&mut whole, 8192).unwrap();
        for (i, s) in whole.chunks(512).enumerate() {
            assert_eq!(
                u64::from_be_bytes(s[..8].try_into().unwrap()),
                16 + i as u64
            );
            assert_eq!(u64::from_be_bytes(s[8..16].try_into().unwrap()), 7);
        }
        // An unaligned read returns the same bytes.
        let mut part = vec![0u8; 1000];
        p.read_at(&mut part, 8192 + 300).unwrap();
        assert_eq!(part, whole[300..1300]);
        // Distinct sectors and seeds differ.
        let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
        sector(1, 7, &mut a);
        sector(1, 8, &mut b);
        assert_ne!(a[16..], b[16..]);
        sector(2, 7, &mut b);
        assert_ne!(a[16..], b[16..]);
    }

    #[test]
    fn config_strings() {
        assert_eq!(parse_config("").unwrap(), 0);
        assert_eq!(parse_config("seed=42").unwrap(), 42);
        for bad in ["42", "seed=", "seed=-1", "size=1"] {
            assert!(parse_config(bad).is_err(), "{bad}");
        }
        let req = OpenRequest {
            object: "/backstores/user/p",
            config: "seed=3",
            size: None,
            read_only: false,
            state_dir: None,
        };
        assert!(matches!(
            PatternHandler.open(&req),
            Err(HandlerError::Size(_))
        ));
        let b = PatternHandler
            .open(&OpenRequest {
                size: Some(1 << 20),
                ..req
            })
            .unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert!(b.capabilities().read_only);
    }
}
