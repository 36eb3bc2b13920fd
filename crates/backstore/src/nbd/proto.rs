//! The NBD wire protocol for the client backstore: constants, the fixed
//! newstyle handshake (structured replies, `base:allocation` metadata
//! context, `NBD_OPT_GO`), and reply parsing (simple replies and structured
//! reply chunks). Every byte read here comes from the server and is treated
//! as untrusted: magics, cookies, lengths and offsets are checked and
//! violations are errors, never panics.

use std::io::{self, IoSlice, Read, Write};

pub(super) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub(super) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub(super) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(super) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(super) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(super) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

pub(super) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(super) const FLAG_NO_ZEROES: u16 = 1 << 1;

pub(super) const OPT_ABORT: u32 = 2;
pub(super) const OPT_GO: u32 = 7;
pub(super) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(super) const OPT_SET_META_CONTEXT: u32 = 10;
pub(super) const REP_ACK: u32 = 1;
pub(super) const REP_INFO: u32 = 3;
pub(super) const REP_META_CONTEXT: u32 = 4;
pub(super) const REP_ERR_BIT: u32 = 1 << 31;
pub(super) const INFO_EXPORT: u16 = 0;
pub(super) const INFO_BLOCK_SIZE: u16 = 3;

pub(super) const TF_READ_ONLY: u16 = 1 << 1;
pub(super) const TF_SEND_FLUSH: u16 = 1 << 2;
pub(super) const TF_SEND_FUA: u16 = 1 << 3;
pub(super) const TF_ROTATIONAL: u16 = 1 << 4;
pub(super) const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(super) const TF_CAN_MULTI_CONN: u16 = 1 << 8;

pub(super) const CMD_READ: u16 = 0;
pub(super) const CMD_WRITE: u16 = 1;
pub(super) const CMD_DISC: u16 = 2;
pub(super) const CMD_FLUSH: u16 = 3;
pub(super) const CMD_WRITE_ZEROES: u16 = 6;
pub(super) const CMD_BLOCK_STATUS: u16 = 7;
pub(super) const CMD_FLAG_FUA: u16 = 1 << 0;
pub(super) const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

pub(super) const CHUNK_NONE: u16 = 0;
pub(super) const CHUNK_OFFSET_DATA: u16 = 1;
pub(super) const CHUNK_OFFSET_HOLE: u16 = 2;
pub(super) const CHUNK_BLOCK_STATUS: u16 = 5;
pub(super) const STATE_HOLE: u32 = 1 << 0;
pub(super) const STATE_ZERO: u32 = 1 << 1;
pub(super) const ALLOCATION_CONTEXT: &[u8] = b"base:allocation";
pub(super) const CHUNK_ERROR_BIT: u16 = 1 << 15;
pub(super) const CHUNK_FLAG_DONE: u16 = 1;

/// Longest option reply or error message we accept.
pub(super) const MAX_OPTION_REPLY: u32 = 64 << 10;
/// Payload limit when the server states none (the NBD spec's safe maximum).
pub(super) const DEFAULT_MAX_PAYLOAD: u32 = 32 << 20;
/// WRITE_ZEROES carries no payload, but its length is 32 bits.
pub(super) const MAX_ZERO_REQUEST: u64 = 1 << 30;

pub(super) fn proto(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("nbd: {}", msg.into()))
}

pub(super) trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub(super) fn rd<const N: usize>(s: &mut dyn Stream) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

pub(super) fn rd16(s: &mut dyn Stream) -> io::Result<u16> {
    rd::<2>(s).map(u16::from_be_bytes)
}
pub(super) fn rd32(s: &mut dyn Stream) -> io::Result<u32> {
    rd::<4>(s).map(u32::from_be_bytes)
}
pub(super) fn rd64(s: &mut dyn Stream) -> io::Result<u64> {
    rd::<8>(s).map(u64::from_be_bytes)
}

pub(super) fn skip(s: &mut dyn Stream, n: u64) -> io::Result<()> {
    io::copy(&mut s.take(n), &mut io::sink()).and_then(|k| {
        if k == n {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    })
}

/// Write every byte of `bufs` with as few syscalls as the kernel allows.
pub(super) fn write_all_vectored(
    s: &mut dyn Stream,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        match s.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An NBD error number as an `io::Error` (NBD uses Linux errno values).
pub(super) fn nbd_errno(e: u32) -> io::Error {
    match e {
        1 | 5 | 12 | 22 | 28 | 75 | 95 | 108 => io::Error::from_raw_os_error(e as i32),
        _ => io::Error::from_raw_os_error(libc::EIO),
    }
}

pub(super) fn send_option(s: &mut dyn Stream, opt: u32, data: &[u8]) -> io::Result<()> {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    h[8..12].copy_from_slice(&opt.to_be_bytes());
    let len = u32::try_from(data.len()).map_err(|_| proto("option too long"))?;
    h[12..].copy_from_slice(&len.to_be_bytes());
    write_all_vectored(s, &mut [IoSlice::new(&h), IoSlice::new(data)])
}

/// One option reply: (type, payload).
pub(super) fn read_option_reply(s: &mut dyn Stream, opt: u32) -> io::Result<(u32, Vec<u8>)> {
    if rd64(s)? != OPT_REPLY_MAGIC {
        return Err(proto("bad option reply magic"));
    }
    if rd32(s)? != opt {
        return Err(proto("option reply for another option"));
    }
    let kind = rd32(s)?;
    let len = rd32(s)?;
    if len > MAX_OPTION_REPLY {
        return Err(proto("option reply too long"));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data)?;
    Ok((kind, data))
}

pub(super) struct Negotiated {
    pub(super) size: u64,
    pub(super) flags: u16,
    pub(super) structured: bool,
    pub(super) max_payload: u32,
    pub(super) preferred: u32,
    pub(super) alloc_ctx: Option<u32>,
}

/// Ask for the `base:allocation` metadata context (block status).
pub(super) fn negotiate_allocation_context(
    s: &mut dyn Stream,
    export: &str,
) -> io::Result<Option<u32>> {
    let name = export.as_bytes();
    let mut q = Vec::with_capacity(12 + name.len() + ALLOCATION_CONTEXT.len());
    q.extend_from_slice(&(name.len() as u32).to_be_bytes());
    q.extend_from_slice(name);
    q.extend_from_slice(&1u32.to_be_bytes());
    q.extend_from_slice(&(ALLOCATION_CONTEXT.len() as u32).to_be_bytes());
    q.extend_from_slice(ALLOCATION_CONTEXT);
    send_option(s, OPT_SET_META_CONTEXT, &q)?;
    let mut id = None;
    loop {
        match read_option_reply(s, OPT_SET_META_CONTEXT)? {
            (REP_ACK, _) => return Ok(id),
            (REP_META_CONTEXT, d) if d.len() >= 4 && &d[4..] == ALLOCATION_CONTEXT => {
                id = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
            }
            (k, _) if k & REP_ERR_BIT != 0 => return Ok(None),
            _ => {}
        }
    }
}

pub(super) fn handshake(s: &mut dyn Stream, export: &str) -> io::Result<Negotiated> {
    if rd64(s)? != NBDMAGIC {
        return Err(proto("not an NBD server"));
    }
    if rd64(s)? != IHAVEOPT {
        return Err(proto("server speaks oldstyle NBD only"));
    }
    let hflags = rd16(s)?;
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(proto("server lacks fixed newstyle negotiation"));
    }
    let cflags = u32::from(FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES));
    s.write_all(&cflags.to_be_bytes())?;

    send_option(s, OPT_STRUCTURED_REPLY, &[])?;
    let structured = loop {
        match read_option_reply(s, OPT_STRUCTURED_REPLY)? {
            (REP_ACK, _) => break true,
            (k, _) if k & REP_ERR_BIT != 0 => break false,
            _ => {}
        }
    };

    let name = export.as_bytes();
    let name_len = u32::try_from(name.len()).map_err(|_| proto("export name too long"))?;
    // Block status needs structured replies.
    let alloc_ctx = if structured {
        negotiate_allocation_context(s, export)?
    } else {
        None
    };
    let mut go = Vec::with_capacity(8 + name.len());
    go.extend_from_slice(&name_len.to_be_bytes());
    go.extend_from_slice(name);
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &go)?;
    let mut n = Negotiated {
        size: 0,
        flags: 0,
        structured,
        max_payload: DEFAULT_MAX_PAYLOAD,
        preferred: 0,
        alloc_ctx,
    };
    let mut have_size = false;
    loop {
        let (kind, data) = read_option_reply(s, OPT_GO)?;
        let be32 = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        match kind {
            REP_ACK => break,
            REP_INFO if data.len() >= 2 => match u16::from_be_bytes([data[0], data[1]]) {
                INFO_EXPORT if data.len() >= 12 => {
                    n.size = u64::from(be32(2)) << 32 | u64::from(be32(6));
                    n.flags = u16::from_be_bytes([data[10], data[11]]);
                    have_size = true;
                }
                INFO_BLOCK_SIZE if data.len() >= 14 => {
                    n.preferred = be32(6);
                    n.max_payload = be32(10).clamp(512, DEFAULT_MAX_PAYLOAD);
                }
                _ => {}
            },
            k if k & REP_ERR_BIT != 0 => {
                // Leave politely so the server doesn't log a broken handshake.
                let _ = send_option(s, OPT_ABORT, &[]);
                let msg = String::from_utf8_lossy(&data).into_owned();
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("nbd: export {export:?} refused (reply {k:#x}): {msg}"),
                ));
            }
            _ => {}
        }
    }
    if !have_size {
        return Err(proto("server sent no export size"));
    }
    Ok(n)
}

/// Where a reply's payload goes.
pub(super) enum Reply<'a> {
    Empty,
    /// READ data.
    Read(&'a mut [u8]),
    /// The first block status descriptor: (length, flags).
    Status(&'a mut Option<(u32, u32)>),
}

/// Outcome of one request: the outer error means the connection is unusable,
/// the inner one is the server's answer to this request.
pub(super) type Exchange = io::Result<io::Result<()>>;

pub(super) fn read_simple(s: &mut dyn Stream, cookie: u64, reply: Reply<'_>) -> Exchange {
    if rd32(s)? != SIMPLE_REPLY_MAGIC {
        return Err(proto("bad reply magic"));
    }
    let err = rd32(s)?;
    if rd64(s)? != cookie {
        return Err(proto("reply for another request"));
    }
    if err != 0 {
        // A failed READ carries no payload in simple replies.
        return Ok(Err(nbd_errno(err)));
    }
    if let Reply::Read(buf) = reply {
        s.read_exact(buf)?;
    }
    Ok(Ok(()))
}

/// Read the chunks of one structured reply. READ data lands in `read`; the
/// first block status descriptor `(length, flags)` for context `ctx` in
/// `status`.
pub(super) fn read_structured(
    s: &mut dyn Stream,
    cookie: u64,
    base: u64,
    mut reply: Reply<'_>,
    ctx: Option<u32>,
) -> Exchange {
    let want = match &reply {
        Reply::Read(b) => b.len() as u64,
        _ => 0,
    };
    let mut got = 0u64;
    let mut failure = None;
    loop {
        let magic = rd32(s)?;
        if magic == SIMPLE_REPLY_MAGIC {
            // Allowed for requests without payload in the reply, and for errors.
            let err = rd32(s)?;
            if rd64(s)? != cookie {
                return Err(proto("reply for another request"));
            }
            if err == 0 && want > 0 {
                return Err(proto("simple reply to a structured READ"));
            }
            return Ok(if err == 0 {
                Ok(())
            } else {
                Err(nbd_errno(err))
            });
        }
        if magic != STRUCTURED_REPLY_MAGIC {
            return Err(proto("bad reply magic"));
        }
        let flags = rd16(s)?;
        let kind = rd16(s)?;
        if rd64(s)? != cookie {
            return Err(proto("reply chunk for another request"));
        }
        let len = rd32(s)?;
        match kind {
            CHUNK_NONE => {
                if len != 0 {
                    return Err(proto("NONE chunk with payload"));
                }
            }
            CHUNK_OFFSET_DATA | CHUNK_OFFSET_HOLE => {
                let Reply::Read(buf) = &mut reply else {
                    return Err(proto("data chunk for a non-READ"));
                };
                let bad = if kind == CHUNK_OFFSET_DATA {
                    len <= 8
                } else {
                    len != 12
                };
                if bad {
                    return Err(proto("malformed data chunk"));
                }
                let off = rd64(s)?;
                let n = if kind == CHUNK_OFFSET_DATA {
                    u64::from(len - 8)
                } else {
                    u64::from(rd32(s)?)
                };
                let start = off
                    .checked_sub(base)
                    .ok_or_else(|| proto("chunk before the request"))?;
                if start.checked_add(n).is_none_or(|end| end > want) {
                    return Err(proto("chunk beyond the request"));
                }
                let dst = &mut buf[start as usize..(start + n) as usize];
                if kind == CHUNK_OFFSET_DATA {
                    s.read_exact(dst)?;
                } else {
                    dst.fill(0);
                }
                got += n;
            }
            CHUNK_BLOCK_STATUS => {
                let Reply::Status(st) = &mut reply else {
                    return Err(proto("block status for another command"));
                };
                if len < 12 || (len - 4) % 8 != 0 {
                    return Err(proto("malformed block status chunk"));
                }
                if Some(rd32(s)?) != ctx {
                    return Err(proto("block status for an unknown context"));
                }
                let extent = (rd32(s)?, rd32(s)?);
                skip(s, u64::from(len) - 12)?;
                st.get_or_insert(extent);
            }
            k if k & CHUNK_ERROR_BIT != 0 => {
                if len < 6 {
                    return Err(proto("short error chunk"));
                }
                let err = rd32(s)?;
                skip(s, u64::from(len) - 4)?;
                failure.get_or_insert(nbd_errno(err.max(1)));
            }
            _ => skip(s, u64::from(len))?,
        }
        if flags & CHUNK_FLAG_DONE != 0 {
            break;
        }
    }
    if let Some(e) = failure {
        return Ok(Err(e));
    }
    // Chunks may not overlap, so full coverage means exactly `want` bytes.
    if got != want {
        return Err(proto("READ reply did not cover the request"));
    }
    Ok(Ok(()))
}

/// Server bytes from a slice; what the client writes is discarded.
struct SliceStream<'a>(&'a [u8]);

impl Read for SliceStream<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for SliceStream<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What [`parse_reply`] found: the server's answer to the request and, for
/// block status, the first extent `(length, flags)`.
pub type ParsedReply = io::Result<Option<(u32, u32)>>;

/// Parse one reply from a byte slice, exactly as the client parses it from
/// its socket (for fuzzing and tests). A non-empty `read` expects READ data
/// for `offset`; `status` expects block status for context `ctx`. Returns
/// the bytes consumed and the server's answer; `Err` is a protocol
/// violation, after which the client drops the connection.
pub fn parse_reply(
    bytes: &[u8],
    structured: bool,
    cookie: u64,
    offset: u64,
    read: &mut [u8],
    status: bool,
    ctx: Option<u32>,
) -> io::Result<(usize, ParsedReply)> {
    let mut s = SliceStream(bytes);
    let mut extent = None;
    let reply = if status {
        Reply::Status(&mut extent)
    } else if read.is_empty() {
        Reply::Empty
    } else {
        Reply::Read(read)
    };
    let answer = if structured {
        read_structured(&mut s, cookie, offset, reply, ctx)?
    } else {
        read_simple(&mut s, cookie, reply)?
    };
    let used = bytes.len() - s.0.len();
    Ok((used, answer.map(|()| extent)))
}

/// Run the client's handshake against server bytes from a slice (for
/// fuzzing and tests): the export's `(size, transmission flags)`.
pub fn parse_handshake(bytes: &[u8], export: &str) -> io::Result<(u64, u16)> {
    let n = handshake(&mut SliceStream(bytes), export)?;
    Ok((n.size, n.flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays canned server bytes; swallows what the client writes.
    struct Canned(io::Cursor<Vec<u8>>);
    impl Read for Canned {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Canned {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn slice_parsers_match_the_stream_ones() {
        let mut hole = 1004u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&4u32.to_be_bytes());
        let mut bytes = chunk(0, CHUNK_OFFSET_DATA, 7, &data(1000, &[1, 2, 3, 4]));
        bytes.extend(chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_HOLE, 7, &hole));
        let total = bytes.len();
        bytes.extend_from_slice(b"next reply");
        let mut buf = [0xffu8; 8];
        let (used, answer) = parse_reply(&bytes, true, 7, 1000, &mut buf, false, None).unwrap();
        assert_eq!(used, total, "stops at the end of the reply");
        assert_eq!(answer.unwrap(), None);
        assert_eq!(buf, [1, 2, 3, 4, 0, 0, 0, 0]);
        // Simple reply with an error: the server's answer, not a violation.
        let mut simple = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        simple.extend_from_slice(&5u32.to_be_bytes());
        simple.extend_from_slice(&9u64.to_be_bytes());
        let (used, answer) = parse_reply(&simple, false, 9, 0, &mut [], false, None).unwrap();
        assert_eq!(used, 16);
        assert!(answer.is_err());
        assert!(parse_reply(&simple[..10], false, 9, 0, &mut [], false, None).is_err());
        // A handshake cut short, or from something that is not NBD.
        assert!(parse_handshake(&NBDMAGIC.to_be_bytes(), "x").is_err());
        assert!(parse_handshake(b"HTTP/1.1 400 Bad Request\r\n\r\n", "x").is_err());
    }

    fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn data(off: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = off.to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    fn run(bytes: Vec<u8>, base: u64, buf: &mut [u8]) -> Exchange {
        let mut c = Canned(io::Cursor::new(bytes));
        read_structured(&mut c, 7, base, Reply::Read(buf), None)
    }

    #[test]
    fn data_and_hole_chunks_assemble_a_read() {
        let mut hole = 1004u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&4u32.to_be_bytes());
        let mut bytes = chunk(0, CHUNK_OFFSET_DATA, 7, &data(1000, &[1, 2, 3, 4]));
        bytes.extend(chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_HOLE, 7, &hole));
        let mut buf = [0xffu8; 8];
        run(bytes, 1000, &mut buf).unwrap().unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_chunks_are_protocol_errors() {
        let mut buf = [0u8; 8];
        // Outside the request.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_DATA, 7, &data(1004, &[0; 8]));
        assert!(run(bytes, 1000, &mut buf).is_err());
        // Before the request.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_DATA, 7, &data(0, &[0; 8]));
        assert!(run(bytes, 1000, &mut buf).is_err());
        // Wrong cookie.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_DATA, 8, &data(1000, &[0; 8]));
        assert!(run(bytes, 1000, &mut buf).is_err());
        // Short coverage.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_DATA, 7, &data(1000, &[0; 4]));
        assert!(run(bytes, 1000, &mut buf).is_err());
        // Truncated stream.
        let mut bytes = chunk(CHUNK_FLAG_DONE, CHUNK_OFFSET_DATA, 7, &data(1000, &[0; 8]));
        bytes.truncate(30);
        assert!(run(bytes, 1000, &mut buf).is_err());
        // Error chunk too short to hold an errno and message length.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_ERROR_BIT | 1, 7, &[0, 0, 0, 5]);
        assert!(run(bytes, 1000, &mut buf).is_err());
    }

    #[test]
    fn block_status_chunk_gives_the_first_extent() {
        let mut p = 3u32.to_be_bytes().to_vec(); // context id
        for (len, flags) in [(4096u32, 3u32), (8192, 0)] {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_BLOCK_STATUS, 7, &p);
        let mut st = None;
        let mut c = Canned(io::Cursor::new(bytes.clone()));
        read_structured(&mut c, 7, 0, Reply::Status(&mut st), Some(3))
            .unwrap()
            .unwrap();
        assert_eq!(st, Some((4096, 3)));
        // Another context id, or block status answering a READ: violations.
        let mut c = Canned(io::Cursor::new(bytes.clone()));
        assert!(read_structured(&mut c, 7, 0, Reply::Status(&mut None), Some(4)).is_err());
        let mut c = Canned(io::Cursor::new(bytes));
        assert!(read_structured(&mut c, 7, 0, Reply::Read(&mut [0; 8]), Some(3)).is_err());
        // Length not 4 + 8n.
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_BLOCK_STATUS, 7, &p[..10]);
        let mut c = Canned(io::Cursor::new(bytes));
        assert!(read_structured(&mut c, 7, 0, Reply::Status(&mut None), Some(3)).is_err());
    }

    #[test]
    fn error_chunk_is_the_servers_answer() {
        let mut e = 5u32.to_be_bytes().to_vec();
        e.extend_from_slice(&2u16.to_be_bytes());
        e.extend_from_slice(b"no");
        let bytes = chunk(CHUNK_FLAG_DONE, CHUNK_ERROR_BIT | 1, 7, &e);
        let mut buf = [0u8; 8];
        let answer = run(bytes, 1000, &mut buf).expect("stream still in sync");
        assert_eq!(answer.unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}
