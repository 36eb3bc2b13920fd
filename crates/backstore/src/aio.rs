//! The asynchronous path of a backstore ([`Backstore::submit`]): a request
//! that owns its buffer ([`IoOp`]) and a [`Completion`] the backstore calls
//! once, on whatever thread finishes the request (a librbd callback, an
//! io_uring reaper), so the engine never blocks a thread per request.
//!
//! The default `submit` runs the synchronous method on the caller's thread
//! and completes before returning ("executed"); a truly asynchronous
//! backstore returns at once and completes later ("submitted"). Callers
//! must accept both: the completion may run inside `submit`.

use std::io;

use crate::Backstore;

/// One request of the asynchronous path. The buffer travels with it and
/// comes back in the completion, so no copy is made for the hand-off.
#[derive(Debug)]
pub enum IoOp {
    /// Fill all of `buf` from `offset`.
    Read { offset: u64, buf: Vec<u8> },
    /// Write `buf[..len]` at `offset`; durable before completing when
    /// `fua`. (`len` lets a fabric pass a pooled buffer as is. A wrapper
    /// may transform the bytes in place, e.g. encrypt them: the buffer
    /// comes back with unspecified contents. A backstore may also keep
    /// it, e.g. rbd hands it to librbd: it then comes back empty.)
    Write {
        offset: u64,
        buf: Vec<u8>,
        len: usize,
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
}

impl IoOp {
    /// Bytes the request moves.
    pub fn len(&self) -> usize {
        match self {
            IoOp::Read { buf, .. } => buf.len(),
            IoOp::Write { len, .. } => *len,
            IoOp::Flush => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run the request with `bs`'s synchronous methods (the default path).
    pub fn run_sync<B: Backstore + ?Sized>(&mut self, bs: &B) -> io::Result<()> {
        match self {
            IoOp::Read { offset, buf } => bs.read_at(buf, *offset),
            IoOp::Write {
                offset,
                buf,
                len,
                fua,
            } => {
                let data = buf.get(..*len).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "write length past its buffer")
                })?;
                if *fua {
                    bs.write_at_fua(data, *offset)
                } else {
                    bs.write_at(data, *offset)
                }
            }
            IoOp::Flush => bs.flush(),
        }
    }
}

type DoneFn = Box<dyn FnOnce(IoOp, io::Result<()>) + Send>;

/// Called exactly once with the request (its buffer) and its result.
pub struct Completion(DoneFn);

impl Completion {
    pub fn new(f: impl FnOnce(IoOp, io::Result<()>) + Send + 'static) -> Completion {
        Completion(Box::new(f))
    }

    pub fn complete(self, op: IoOp, result: io::Result<()>) {
        (self.0)(op, result)
    }

    /// A completion that runs `then` on the result before this one (a
    /// wrapper's post-processing, e.g. decryption).
    pub fn map(
        self,
        then: impl FnOnce(&mut IoOp, io::Result<()>) -> io::Result<()> + Send + 'static,
    ) -> Completion {
        Completion::new(move |mut op, r| {
            let r = then(&mut op, r);
            self.complete(op, r)
        })
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completion")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Arc;

    use super::*;
    use crate::RamBackstore;

    /// The default `submit` runs the synchronous methods and completes
    /// before it returns, handing the buffer back.
    #[test]
    fn default_submit_completes_inline_with_the_buffer() {
        let r: Arc<dyn Backstore> = Arc::new(RamBackstore::new(1 << 20).unwrap());
        let (tx, rx) = mpsc::channel();
        let t2 = tx.clone();
        r.submit(
            IoOp::Write {
                offset: 4096,
                buf: vec![7u8; 1024],
                len: 512,
                fua: true,
            },
            Completion::new(move |op, res| t2.send((op.len(), res.is_ok())).unwrap()),
        );
        assert_eq!(rx.try_recv().unwrap(), (512, true), "executed inline");
        r.submit(
            IoOp::Read {
                offset: 4096,
                buf: vec![1u8; 1024],
            },
            Completion::new(move |op, res| {
                res.unwrap();
                let IoOp::Read { buf, .. } = op else { panic!() };
                let sevens = buf.iter().take_while(|&&b| b == 7).count();
                tx.send((sevens, buf[600] == 0)).unwrap()
            }),
        );
        assert_eq!(rx.try_recv().unwrap(), (512, true));
    }
}
