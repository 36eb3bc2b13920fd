//! Running a command whose Data-Out is complete (here, on the pool, or
//! from lent backstore pages) and turning its outcome into Data-In and the
//! SCSI Response: segmenting to the initiator's MaxRecvDataSegmentLength and
//! MaxBurstLength, status in the last Data-In, residuals, sense.

use iscsi_wire::request::ScsiCommand;
use iscsi_wire::response::{DataIn, Residual, ScsiResponse};
use iscsi_wire::{Bhs, RESERVED_TAG};
use target_core::{Command, Outcome, Status};

use super::{task_attr, Session};
use crate::txq::{TxData, TxQueue};

impl Session {
    /// Run a command whose Data-Out (if any) is complete: here, or on the
    /// pool for pool LUs and long commands (with a pooled copy of the data).
    pub fn execute(&mut self, tx: &mut TxQueue, c: &ScsiCommand, cdb: &[u8], data_out: &[u8]) {
        self.refresh_luns();
        let lun = scsi::lun::decode(c.lun);
        if let Some(long) = self.pool_choice(lun, c, cdb) {
            // Most commands carry no data: no buffer for them.
            let buf = if data_out.is_empty() {
                Vec::new()
            } else {
                let mut b = tx.take_buf();
                b.extend_from_slice(data_out);
                b
            };
            self.submit(tx, c, cdb, buf, long);
            return;
        }
        if data_out.is_empty() && self.overlap_read(tx, c, lun) {
            self.submit(tx, c, cdb, Vec::new(), false);
            return;
        }
        self.execute_inline(tx, c, cdb, data_out);
    }

    /// `execute` for Data-Out gathered in a pooled buffer, which is handed
    /// to the pool as is or recycled.
    pub fn execute_owned(&mut self, tx: &mut TxQueue, c: &ScsiCommand, cdb: &[u8], buf: Vec<u8>) {
        self.refresh_luns();
        let lun = scsi::lun::decode(c.lun);
        if let Some(long) = self.pool_choice(lun, c, cdb) {
            self.submit(tx, c, cdb, buf, long);
            return;
        }
        if self.overlap_write(c, lun, buf.len()) {
            self.submit(tx, c, cdb, buf, false);
            return;
        }
        self.execute_inline(tx, c, cdb, &buf);
        tx.recycle(buf);
    }

    /// Run a command to completion on this thread.
    pub fn execute_inline(
        &mut self,
        tx: &mut TxQueue,
        c: &ScsiCommand,
        cdb: &[u8],
        data_out: &[u8],
    ) {
        if data_out.is_empty() && self.execute_lent(tx, c, cdb) {
            return;
        }
        let lun = scsi::lun::decode(c.lun);
        // The core clears it for anything but a READ, which overwrites it.
        let mut data_in = tx.take_filled();
        let cmd = Command {
            cdb,
            data_out,
            expected_len: c.expected_data_len,
            attr: task_attr(c.attr),
        };
        let out = self.luns.execute(&self.nexus, lun, &cmd, &mut data_in);
        self.count_io(lun, c, data_in.len(), data_out.len());
        self.respond(tx, c, cdb, data_out.len(), out, data_in, 0);
    }

    /// Per-LUN counters for `sessions detail`.
    pub fn count_io(&self, lun: u64, c: &ScsiCommand, data_in_len: usize, data_out_len: usize) {
        if let Some(i) = self.luns.luns.iter().position(|l| l.id == lun) {
            if let Some(k) = self.counters.get(i) {
                let sent = if c.read {
                    data_in_len.min(c.expected_data_len as usize)
                } else {
                    0
                };
                k.count(sent as u64, data_out_len as u64);
            }
        }
    }

    /// Queue Data-In (status in the last one when GOOD without sense) and/or
    /// the SCSI Response. `overflow`: Data-In the command produced beyond
    /// `data_in` (already dropped), for the residual.
    #[allow(clippy::too_many_arguments)]
    pub fn respond(
        &mut self,
        tx: &mut TxQueue,
        c: &ScsiCommand,
        cdb: &[u8],
        data_out_len: usize,
        out: Outcome,
        data_in: impl Into<TxData>,
        overflow: usize,
    ) {
        let data_in = data_in.into();
        let edtl = c.expected_data_len;
        let status = out.status as u8;
        let residual = if c.write {
            let lun = scsi::lun::decode(c.lun);
            let wanted = self
                .luns
                .data_out_len(lun, cdb)
                .unwrap_or(data_out_len as u64);
            Residual::of(edtl, wanted)
        } else if c.read {
            Residual::of(edtl, (data_in.len() + overflow) as u64)
        } else {
            Residual::default()
        };
        let send = if c.read {
            data_in.len().min(edtl as usize)
        } else {
            0
        };
        let in_data_in = out.status == Status::Good && out.sense.is_none() && send > 0;
        if send > 0 {
            let idx = tx.adopt(data_in);
            let seg = (self.params.initiator_mrdsl as usize).max(512);
            let burst = (self.params.max_burst_length as usize).max(seg);
            let mut off = 0usize;
            let mut datasn = 0u32;
            while off < send {
                let burst_left = burst - (off % burst);
                let len = seg.min(send - off).min(burst_left);
                let last = off + len == send;
                let status_here = in_data_in && last;
                let d = DataIn {
                    final_bit: last || len == burst_left,
                    status: status_here.then_some(status),
                    residual,
                    lun: c.lun,
                    itt: c.itt,
                    ttt: RESERVED_TAG,
                    sn: if status_here {
                        self.sn_next()
                    } else {
                        self.sn_peek()
                    },
                    datasn,
                    buffer_offset: off as u32,
                };
                let mut b = Bhs::default();
                d.write_to(&mut b);
                tx.push_pdu_ref(&b, idx, off, len, self.digests);
                off += len;
                datasn = datasn.wrapping_add(1);
            }
            if in_data_in {
                return;
            }
            self.push_response(tx, c, status, residual, datasn, out.sense.as_deref());
        } else {
            tx.recycle(data_in);
            self.push_response(tx, c, status, residual, 0, out.sense.as_deref());
        }
    }

    fn push_response(
        &mut self,
        tx: &mut TxQueue,
        c: &ScsiCommand,
        status: u8,
        residual: Residual,
        exp_datasn: u32,
        sense: Option<&[u8]>,
    ) {
        let r = ScsiResponse {
            response: 0,
            status,
            residual,
            itt: c.itt,
            sn: self.sn_next(),
            exp_datasn,
        };
        let mut b = Bhs::default();
        r.write_to(&mut b);
        match sense {
            Some(s) if !s.is_empty() => {
                // SenseLength (2 bytes) then the sense data, on the stack.
                let n = s.len().min(252);
                let mut seg = [0u8; 254];
                seg[..2].copy_from_slice(&(n as u16).to_be_bytes());
                seg[2..2 + n].copy_from_slice(&s[..n]);
                tx.push_pdu(&b, &seg[..2 + n], self.digests);
            }
            _ => tx.push_pdu(&b, &[], self.digests),
        }
    }
}
