//! Shared helpers of the integration tests: an in-memory backstore, a
//! server with one or more targets on 127.0.0.1:0, and a tiny raw-PDU
//! initiator (login, SCSI commands with immediate/unsolicited/solicited
//! data, NOP, logout) that checks sequence numbers as it goes.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backstore::{Backstore, Capabilities};
use iscsi::{IscsiServer, TargetConfig, TpgConfig};
use iscsi_wire::request::{
    Attr, DataOut, LoginRequest, LogoutRequest, NopOut, ScsiCommand, TaskMgmtRequest, TextRequest,
};
use iscsi_wire::response::{DataIn, LoginResponse, R2t, ScsiResponse, TaskMgmtResponse};
use iscsi_wire::text::{encode_pairs, parse_pairs, Pair};
use iscsi_wire::tmf::TmfFunction;
use iscsi_wire::{parse_frame, Bhs, Digests, Opcode};
use target_core::{Device, DeviceOptions, Lun, LunTable};

mod streaming;
// Not every test binary uses them.
#[allow(unused_imports)]
pub use streaming::*;

/// RAM behind a lock: enough for functional tests.
pub struct MemStore(RwLock<Vec<u8>>);

impl MemStore {
    pub fn new(size: usize) -> Arc<MemStore> {
        Arc::new(MemStore(RwLock::new(vec![0; size])))
    }
}

impl Backstore for MemStore {
    fn size(&self) -> u64 {
        self.0.read().unwrap().len() as u64
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.0.read().unwrap();
        let o = offset as usize;
        let src = d.get(o..o + buf.len()).ok_or(io::ErrorKind::InvalidInput)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.0.write().unwrap();
        let o = offset as usize;
        let dst = d
            .get_mut(o..o + buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

pub const IQN: &str = "iqn.2026-11.org.rtarget:test";
pub const INITIATOR: &str = "iqn.2026-11.org.rtarget:client";

pub fn target(iqn: &str, size: usize, params: &[(&str, &str)]) -> TargetConfig {
    let dev = Device::new(
        DeviceOptions::new("mem0", "5b3c9a2e-0000-4000-8000-000000000001"),
        MemStore::new(size),
    );
    let mut t = one_lun_target(iqn, dev, iscsi::tpg_offer(params.iter().copied()).unwrap());
    t.tpgs[0].portals = vec!["0.0.0.0:3260".parse().unwrap()];
    t
}

/// A target with one TPG (tag 1, demo mode) exporting `dev` as LUN 0.
pub fn one_lun_target(iqn: &str, dev: Arc<Device>, offer: iscsi::TargetOffer) -> TargetConfig {
    let luns = Arc::new(LunTable {
        luns: vec![Lun {
            id: 0,
            device: dev,
            write_protect: false,
        }],
    });
    TargetConfig {
        iqn: iqn.into(),
        tpgs: vec![TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns,
            acls: vec![],
            attributes: config::TpgAttributes {
                generate_node_acls: true,
                ..Default::default()
            },
            chap: None,
            offer,
        }],
    }
}

/// An in-process server on 127.0.0.1 exporting `dev` as LUN 0 of [`IQN`].
pub fn serve_device(dev: Arc<Device>) -> (Arc<IscsiServer>, SocketAddr) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let s = IscsiServer::new();
    s.set_target(one_lun_target(IQN, dev, Default::default()));
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

pub fn server(params: &[(&str, &str)]) -> (Arc<IscsiServer>, SocketAddr) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let s = IscsiServer::new();
    s.set_target(target(IQN, 8 << 20, params));
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

/// One received PDU.
#[derive(Debug)]
pub struct Pdu {
    pub bhs: Bhs,
    pub data: Vec<u8>,
}

pub struct Client {
    pub sock: TcpStream,
    pub buf: Vec<u8>,
    pub digests: Digests,
    pub cmdsn: u32,
    pub exp_statsn: u32,
    pub itt: u32,
    pub isid: [u8; 6],
    pub tsih: u16,
    /// Connection ID sent at login (MC/S tests add connections).
    pub cid: u16,
    /// Negotiated values the client acts on.
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst: u32,
    pub target_mrdsl: u32,
    /// InitiatorName sent at login.
    pub initiator: String,
    /// LUN commands are addressed to.
    pub lun: u64,
    /// Sense data of the last SCSI Response that carried some.
    pub last_sense: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            buf: Vec::new(),
            digests: Digests::default(),
            cmdsn: 1,
            exp_statsn: 0,
            itt: 1,
            isid: [0x80, 0, 0, 0, 0x12, 0x34],
            tsih: 0,
            cid: 0,
            immediate_data: true,
            initial_r2t: true,
            first_burst: 65536,
            target_mrdsl: 8192,
            initiator: INITIATOR.to_string(),
            lun: 0,
            last_sense: Vec::new(),
        }
    }

    pub fn send(&mut self, bhs: &Bhs, data: &[u8]) {
        let mut out = Vec::new();
        iscsi_wire::pdu::encode(&mut out, bhs, data, self.digests);
        self.sock.write_all(&out).unwrap();
    }

    /// Send a SCSI Command PDU with `data` as its immediate data; the
    /// header as sent.
    pub fn send_cmd(&mut self, cmd: &ScsiCommand, data: &[u8]) -> Bhs {
        let mut b = Bhs::default();
        cmd.write_to(&mut b);
        self.send(&b, data);
        b
    }

    /// The encoded PDU of a SCSI command (immediate data included), for
    /// tests that send several in one write.
    pub fn encode_cmd(&self, cmd: &ScsiCommand, data: &[u8]) -> Vec<u8> {
        let mut b = Bhs::default();
        cmd.write_to(&mut b);
        let mut out = Vec::new();
        iscsi_wire::pdu::encode(&mut out, &b, data, self.digests);
        out
    }

    /// The answers to single-PDU reads in flight, `want` mapping each ITT
    /// to the data it must return: each in one Data-In with GOOD status,
    /// StatSN in order, each ITT once.
    pub fn expect_reads(&mut self, mut want: std::collections::HashMap<u32, Vec<u8>>) {
        while !want.is_empty() {
            let p = self.recv().unwrap();
            assert_eq!(p.bhs.opcode(), Opcode::DATA_IN, "status rides in Data-In");
            let d = DataIn::parse(&p.bhs);
            assert_eq!(d.status, Some(0));
            assert_eq!(d.sn.statsn, self.exp_statsn, "StatSN in order");
            self.exp_statsn += 1;
            let exp = want.remove(&d.itt).expect("known ITT, answered once");
            assert!(p.data == exp, "data of ITT {}", d.itt);
        }
    }

    /// Send a Data-Out PDU carrying `data`.
    pub fn send_data_out(&mut self, d: &DataOut, data: &[u8]) {
        let mut b = Bhs::default();
        d.write_to(&mut b);
        self.send(&b, data);
    }

    /// Send the data an R2T asks for (from `data`, the whole write's
    /// Data-Out), in one final Data-Out.
    pub fn answer_r2t(&mut self, r: &R2t, data: &[u8]) {
        let (d, part) = self.r2t_answer(r, data, 0);
        self.send_data_out(&d, part);
    }

    /// Send a Task Management Function Request.
    pub fn send_tmf(&mut self, tm: &TaskMgmtRequest) {
        let mut b = Bhs::default();
        tm.write_to(&mut b);
        self.send(&b, &[]);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Next PDU, or an error on EOF/timeout.
    pub fn recv(&mut self) -> io::Result<Pdu> {
        loop {
            if let Some(f) = parse_frame(&self.buf, self.digests, 16 << 20)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                assert!(f.data_digest_ok, "bad data digest from target");
                let p = Pdu {
                    bhs: f.bhs,
                    data: f.data.to_vec(),
                };
                let n = f.total_len;
                self.buf.drain(..n);
                return Ok(p);
            }
            let mut tmp = [0u8; 65536];
            let n = self.sock.read(&mut tmp)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// True when the target closed the connection (EOF or reset).
    pub fn closed(&mut self) -> bool {
        loop {
            match self.recv() {
                Ok(_) => continue,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                    )
                }
            }
        }
    }

    fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// A leading login request (transit to `nsg`) naming [`INITIATOR`] and
    /// [`IQN`], then the `extra` keys.
    pub fn login_named(
        &mut self,
        csg: u8,
        nsg: u8,
        extra: &[(&str, &str)],
    ) -> (LoginResponse, Vec<Pair>) {
        let mut pairs = vec![("InitiatorName", INITIATOR), ("TargetName", IQN)];
        pairs.extend_from_slice(extra);
        self.login_pdu(csg, nsg, true, &pairs)
    }

    /// The CHAP security stage up to the initiator's answer: offers CHAP
    /// as `initiator` to [`IQN`], picks MD5 and returns the hex CHAP_R for
    /// the target's challenge and `secret` (the caller sends it).
    pub fn chap_response(&mut self, initiator: &str, secret: &str) -> String {
        use iscsi_wire::chap::{decode_binary, encode_hex, response};
        let (r, pairs) = self.login_pdu(
            0,
            1,
            false,
            &[
                ("InitiatorName", initiator),
                ("TargetName", IQN),
                ("AuthMethod", "CHAP,None"),
            ],
        );
        assert_eq!(r.status_class, 0);
        assert!(pairs
            .iter()
            .any(|p| p.key == "AuthMethod" && p.value == "CHAP"));
        let (r, pairs) = self.login_pdu(0, 1, false, &[("CHAP_A", "5")]);
        assert_eq!(r.status_class, 0);
        assert!(!r.transit);
        let get = |k: &str| pairs.iter().find(|p| p.key == k).unwrap().value.clone();
        let id: u8 = get("CHAP_I").parse().unwrap();
        let ch = decode_binary(&get("CHAP_C")).unwrap();
        encode_hex(&response(id, secret.as_bytes(), &ch))
    }

    /// One login request; returns the response and its pairs.
    pub fn login_pdu(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        pairs: &[(&str, &str)],
    ) -> (LoginResponse, Vec<Pair>) {
        let req = LoginRequest {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: self.itt,
            cid: self.cid,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
        };
        let mut b = Bhs::default();
        req.write_to(&mut b);
        let data = encode_pairs(
            &pairs
                .iter()
                .map(|(k, v)| Pair::new(*k, *v))
                .collect::<Vec<_>>(),
        );
        let saved = self.digests;
        self.digests = Digests::default();
        self.send(&b, &data);
        let p = self.recv().expect("login response");
        self.digests = saved;
        assert_eq!(p.bhs.opcode(), Opcode::LOGIN_RESPONSE);
        let r = LoginResponse::parse(&p.bhs);
        self.exp_statsn = r.sn.statsn.wrapping_add(1);
        (r, parse_pairs(&p.data).unwrap())
    }

    /// Full login to `target` (or discovery when `None`) with extra keys.
    pub fn login(&mut self, target: Option<&str>, extra: &[(&str, &str)]) -> Vec<Pair> {
        let name = self.initiator.clone();
        let mut sec = vec![("InitiatorName", name.as_str()), ("AuthMethod", "None")];
        match target {
            Some(t) => {
                sec.push(("SessionType", "Normal"));
                sec.push(("TargetName", t));
            }
            None => sec.push(("SessionType", "Discovery")),
        }
        let (r, _) = self.login_pdu(0, 1, true, &sec);
        assert_eq!((r.status_class, r.status_detail), (0, 0), "security stage");
        let mut op = vec![
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "65536"),
        ];
        if target.is_some() {
            op.extend_from_slice(&[
                ("ImmediateData", "Yes"),
                ("InitialR2T", "No"),
                ("FirstBurstLength", "65536"),
                ("MaxBurstLength", "262144"),
                ("MaxOutstandingR2T", "4"),
            ]);
        }
        for (k, v) in extra {
            if let Some(e) = op.iter_mut().find(|(ek, _)| ek == k) {
                e.1 = v;
            } else {
                op.push((k, v));
            }
        }
        let (r, pairs) = self.login_pdu(1, 3, true, &op);
        assert_eq!(
            (r.status_class, r.status_detail),
            (0, 0),
            "operational stage"
        );
        assert!(r.transit);
        assert_ne!(r.tsih, 0);
        self.tsih = r.tsih;
        let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.clone());
        self.digests = Digests {
            header: get("HeaderDigest").as_deref() == Some("CRC32C"),
            data: get("DataDigest").as_deref() == Some("CRC32C"),
        };
        self.immediate_data = get("ImmediateData").as_deref() != Some("No");
        self.initial_r2t = get("InitialR2T").as_deref() != Some("No");
        // (A login adding a connection gets "Irrelevant": the session's.)
        if let Some(Ok(fb)) = get("FirstBurstLength").map(|v| v.parse()) {
            self.first_burst = fb;
        }
        if let Some(m) = get("MaxRecvDataSegmentLength") {
            self.target_mrdsl = m.parse().unwrap();
        }
        pairs
    }

    pub fn scsi_cmd_header(
        &mut self,
        cdb: &[u8],
        read: bool,
        write: bool,
        edtl: u32,
    ) -> ScsiCommand {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let itt = self.next_itt();
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: true,
            read,
            write,
            attr: Attr::Simple,
            lun: scsi::lun::encode(self.lun),
            itt,
            expected_data_len: edtl,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
            cdb: c,
        };
        self.cmdsn = self.cmdsn.wrapping_add(1);
        cmd
    }

    /// Run a read-type command; returns (status, data, response pdu if any, residual).
    pub fn read_cmd(&mut self, cdb: &[u8], edtl: u32) -> (u8, Vec<u8>, Option<ScsiResponse>) {
        let c = self.scsi_cmd_header(cdb, true, false, edtl);
        self.send_cmd(&c, &[]);
        let mut data = Vec::new();
        let mut next_sn = 0;
        loop {
            let p = self.recv().expect("response");
            match p.bhs.opcode() {
                Opcode::DATA_IN => {
                    let d = DataIn::parse(&p.bhs);
                    assert_eq!(d.itt, c.itt);
                    assert_eq!(d.datasn, next_sn, "DataSN");
                    assert_eq!(d.buffer_offset as usize, data.len(), "offset");
                    next_sn += 1;
                    data.extend_from_slice(&p.data);
                    if let Some(s) = d.status {
                        assert_eq!(d.sn.statsn, self.exp_statsn, "StatSN");
                        self.exp_statsn += 1;
                        return (s, data, None);
                    }
                }
                Opcode::SCSI_RESPONSE => {
                    let r = ScsiResponse::parse(&p.bhs);
                    self.last_sense = p.data.get(2..).unwrap_or_default().to_vec();
                    assert_eq!(r.itt, c.itt);
                    assert_eq!(r.sn.statsn, self.exp_statsn, "StatSN");
                    self.exp_statsn += 1;
                    return (r.status, data, Some(r));
                }
                op => panic!("unexpected {op:?}"),
            }
        }
    }

    /// Run a write; sends immediate/unsolicited data per the negotiated
    /// parameters and answers R2Ts. Returns the SCSI Response.
    pub fn write_cmd(&mut self, cdb: &[u8], data: &[u8]) -> ScsiResponse {
        let edtl = data.len() as u32;
        let mut c = self.scsi_cmd_header(cdb, false, true, edtl);
        let seg = self.target_mrdsl as usize;
        let mut sent = 0usize;
        let imm = if self.immediate_data {
            data.len().min(self.first_burst as usize).min(seg)
        } else {
            0
        };
        let unsol_end = if self.initial_r2t {
            imm
        } else {
            data.len().min(self.first_burst as usize)
        };
        c.final_bit = unsol_end == imm;
        self.send_cmd(&c, &data[..imm]);
        sent += imm;
        let mut datasn = 0;
        while sent < unsol_end {
            let n = (unsol_end - sent).min(seg);
            let d = DataOut {
                final_bit: sent + n == unsol_end,
                lun: [0; 8],
                itt: c.itt,
                ttt: 0xffff_ffff,
                exp_statsn: self.exp_statsn,
                datasn,
                buffer_offset: sent as u32,
            };
            self.send_data_out(&d, &data[sent..sent + n]);
            sent += n;
            datasn += 1;
        }
        loop {
            let p = self.recv().expect("write response");
            match p.bhs.opcode() {
                Opcode::R2T => {
                    let r = R2t::parse(&p.bhs);
                    assert_eq!(r.itt, c.itt);
                    let mut off = r.buffer_offset as usize;
                    let end = off + r.desired_len as usize;
                    let mut sn = 0;
                    while off < end {
                        let n = (end - off).min(seg);
                        let d = DataOut {
                            final_bit: off + n == end,
                            lun: [0; 8],
                            itt: c.itt,
                            ttt: r.ttt,
                            exp_statsn: self.exp_statsn,
                            datasn: sn,
                            buffer_offset: off as u32,
                        };
                        self.send_data_out(&d, &data[off..off + n]);
                        off += n;
                        sn += 1;
                    }
                }
                Opcode::SCSI_RESPONSE => {
                    let r = ScsiResponse::parse(&p.bhs);
                    self.last_sense = p.data.get(2..).unwrap_or_default().to_vec();
                    assert_eq!(r.sn.statsn, self.exp_statsn, "StatSN");
                    self.exp_statsn += 1;
                    return r;
                }
                op => panic!("unexpected {op:?}"),
            }
        }
    }

    /// TEST UNIT READY until GOOD (consumes unit attentions).
    pub fn clear_ua(&mut self) {
        for _ in 0..4 {
            let (st, _, _) = self.read_cmd(&[0; 6], 0);
            if st == 0 {
                return;
            }
        }
        panic!("TEST UNIT READY never returned GOOD");
    }

    pub fn nop(&mut self, payload: &[u8]) -> Pdu {
        let itt = self.next_itt();
        let n = NopOut {
            immediate: true,
            lun: [0; 8],
            itt,
            ttt: 0xffff_ffff,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
        };
        let mut b = Bhs::default();
        n.write_to(&mut b);
        self.send(&b, payload);
        let p = self.recv().expect("nop-in");
        assert_eq!(p.bhs.opcode(), Opcode::NOP_IN);
        assert_eq!(p.bhs.itt(), itt);
        self.exp_statsn = p.bhs.u32_at(24).wrapping_add(1);
        p
    }

    /// Every R2T the target sent before its answer to a NOP-Out sent now
    /// (the target answers in order: what precedes the NOP-In was earned
    /// by the commands sent before it).
    pub fn r2ts_until_nop(&mut self) -> Vec<R2t> {
        let n = NopOut {
            immediate: true,
            lun: [0; 8],
            itt: 0x7777_0000,
            ttt: 0xffff_ffff,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
        };
        let mut b = Bhs::default();
        n.write_to(&mut b);
        self.send(&b, &[]);
        let mut r2ts = Vec::new();
        loop {
            let p = self.recv().expect("R2T or NOP-In");
            match p.bhs.opcode() {
                Opcode::R2T => r2ts.push(R2t::parse(&p.bhs)),
                Opcode::NOP_IN => return r2ts,
                op => panic!("unexpected {op:?}"),
            }
        }
    }

    pub fn text(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let itt = self.next_itt();
        let mut all = Vec::new();
        let mut ttt = 0xffff_ffff;
        let mut data = encode_pairs(
            &pairs
                .iter()
                .map(|(k, v)| Pair::new(*k, *v))
                .collect::<Vec<_>>(),
        );
        loop {
            let t = TextRequest {
                immediate: true,
                final_bit: true,
                cont: false,
                lun: [0; 8],
                itt,
                ttt,
                cmdsn: self.cmdsn,
                exp_statsn: self.exp_statsn,
            };
            let mut b = Bhs::default();
            t.write_to(&mut b);
            self.send(&b, &data);
            data.clear();
            let p = self.recv().expect("text response");
            assert_eq!(p.bhs.opcode(), Opcode::TEXT_RESPONSE);
            self.exp_statsn = p.bhs.u32_at(24).wrapping_add(1);
            all.extend_from_slice(&p.data);
            if p.bhs.final_bit() {
                assert_eq!(p.bhs.u32_at(20), 0xffff_ffff);
                return all;
            }
            ttt = p.bhs.u32_at(20);
        }
    }

    pub fn logout(&mut self) -> Pdu {
        self.logout_for(0, self.cid)
    }

    /// Logout with this reason code (0: session, 1: connection `cid`).
    pub fn logout_for(&mut self, reason: u8, cid: u16) -> Pdu {
        let itt = self.next_itt();
        let l = LogoutRequest {
            immediate: true,
            reason,
            itt,
            cid,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
        };
        let mut b = Bhs::default();
        l.write_to(&mut b);
        self.send(&b, &[]);
        let p = self.recv().expect("logout response");
        assert_eq!(p.bhs.opcode(), Opcode::LOGOUT_RESPONSE);
        self.exp_statsn = p.bhs.u32_at(24).wrapping_add(1);
        p
    }

    /// One immediate Task Management Function request (`function` is the
    /// wire code, `lun` single-level) and its response.
    pub fn tmf(&mut self, function: u8, lun: u8, referenced_tag: u32) -> TaskMgmtResponse {
        let tm = TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::from_code(function),
            lun: [0, lun, 0, 0, 0, 0, 0, 0],
            itt: 0x4000 + u32::from(function),
            referenced_tag,
            cmdsn: self.cmdsn,
            exp_statsn: self.exp_statsn,
            ref_cmdsn: 0,
            exp_datasn: 0,
        };
        self.send_tmf(&tm);
        let p = self.recv().expect("task management response");
        assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE);
        self.exp_statsn += 1;
        TaskMgmtResponse::parse(&p.bhs)
    }

    /// The response code of `function` on LUN 0, no task referenced.
    pub fn tmf_code(&mut self, function: u8) -> u8 {
        self.tmf(function, 0, 0xffff_ffff).response.code()
    }
}

/// A client logged in to `IQN` with `extra` keys, unit attentions cleared:
/// the set-up most tests start from.
pub fn session(addr: SocketAddr, extra: &[(&str, &str)]) -> Client {
    logged_in(Client::connect(addr), extra)
}

/// [`session`] with the last ISID byte `n`: one of several sessions that
/// one initiator has at once.
pub fn nth_session(addr: SocketAddr, n: u8, extra: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr);
    c.isid[5] = n;
    logged_in(c, extra)
}

/// [`session`] for another initiator (its own name, its ISID ending in
/// `n`): a second I_T nexus, e.g. one that resets or reserves the LU.
pub fn other_initiator_session(addr: SocketAddr, n: u8, extra: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr);
    c.initiator = "iqn.2026-11.org.rtarget:other".into();
    c.isid = [0x80, 0, 0, 0, 0x55, n];
    logged_in(c, extra)
}

fn logged_in(mut c: Client, extra: &[(&str, &str)]) -> Client {
    c.login(Some(IQN), extra);
    c.clear_ua();
    c
}

/// READ(10) each `(lba, blocks)` of `reads` and check its data against
/// `medium` (the whole LU as it should be); `config` names the session
/// shape in a failure.
#[track_caller]
pub fn assert_reads_match(c: &mut Client, medium: &[u8], reads: &[(u32, u16)], config: usize) {
    for &(lba, blocks) in reads {
        let len = blocks as usize * 512;
        let (st, got, _) = c.read_cmd(&read10(lba, blocks), len as u32);
        assert_eq!(st, 0);
        let at = lba as usize * 512;
        assert!(
            got == medium[at..at + len],
            "config {config}: read {lba}+{blocks}"
        );
    }
}

pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
