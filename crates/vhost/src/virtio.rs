//! virtio-scsi wire formats (VIRTIO 1.x 5.6): the request and response
//! headers of the request queues, control-queue TMF and AN requests, event
//! records and the LUN field. Parsed from and written to plain byte arrays
//! (the structs are packed little-endian), so nothing here is unsafe.

pub use virtio_bindings::virtio_scsi::*;

/// virtio device id of a SCSI host (VIRTIO 1.x 5).
pub const DEVICE_ID: u32 = 8;
/// CDB bytes in a request header (config `cdb_size`; QEMU keeps the default).
pub const CDB_SIZE: usize = VIRTIO_SCSI_CDB_DEFAULT_SIZE as usize;
/// Sense bytes in a response header (config `sense_size`).
pub const SENSE_SIZE: usize = VIRTIO_SCSI_SENSE_DEFAULT_SIZE as usize;
/// lun[8] + id + task_attr + prio + crn + cdb.
pub const CMD_REQ_LEN: usize = 8 + 8 + 3 + CDB_SIZE;
/// sense_len + resid + status_qualifier + status + response + sense.
pub const CMD_RESP_LEN: usize = 4 + 4 + 2 + 1 + 1 + SENSE_SIZE;
/// type + subtype + lun + id.
pub const TMF_REQ_LEN: usize = 4 + 4 + 8 + 8;
/// type + lun + event_requested.
pub const AN_REQ_LEN: usize = 4 + 8 + 4;
/// event + lun + reason.
pub const EVENT_LEN: usize = 16;

/// Where a virtio LUN field points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub target: u8,
    /// First-level LUN number as `scsi::lun::decode` gives it (well-known
    /// LUNs such as REPORT LUNS 0xC101 come out as numbers that never
    /// match a mapped LUN, which the core answers as SPC-4 wants).
    pub lun: u64,
}

/// Decode the virtio LUN format: byte 0 = 1, byte 1 = target, bytes 2-3 =
/// a single-level LUN (flat space, or peripheral, or a well-known LUN),
/// bytes 4-7 zero. `None` if the field is not in that format.
pub fn decode_lun(raw: &[u8; 8]) -> Option<Address> {
    if raw[0] != 1 || raw[4..] != [0; 4] {
        return None;
    }
    let mut sam = [0u8; 8];
    sam[..2].copy_from_slice(&raw[2..4]);
    Some(Address {
        target: raw[1],
        lun: scsi::lun::decode(sam),
    })
}

/// Encode a LUN number for `target` as Linux's virtio_scsi does in its
/// requests (always flat space).
pub fn encode_lun(target: u8, lun: u64) -> [u8; 8] {
    let l = (lun & 0x3fff) as u16;
    [1, target, 0x40 | (l >> 8) as u8, l as u8, 0, 0, 0, 0]
}

/// The LUN field of an event: bytes 2-3 encoded as REPORT LUNS lists the
/// LUN (peripheral addressing below 256). Linux takes bytes 2-3 of an
/// event verbatim as its LUN number, so this is what makes a hotplugged
/// LUN 1 appear as `H:0:T:1` (the number a scan gives it) and a REMOVED
/// event find the device a scan created.
pub fn event_lun(target: u8, lun: u64) -> [u8; 8] {
    let sam = scsi::lun::encode(lun);
    [1, target, sam[0], sam[1], 0, 0, 0, 0]
}

/// A request-queue command header.
#[derive(Debug, Clone)]
pub struct CmdReq {
    pub lun: [u8; 8],
    pub id: u64,
    pub task_attr: u8,
    pub cdb: [u8; CDB_SIZE],
}

impl CmdReq {
    pub fn parse(b: &[u8; CMD_REQ_LEN]) -> CmdReq {
        let mut cdb = [0u8; CDB_SIZE];
        cdb.copy_from_slice(&b[19..19 + CDB_SIZE]);
        CmdReq {
            lun: b[..8].try_into().unwrap(),
            id: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            task_attr: b[16],
            cdb,
        }
    }

    pub fn to_bytes(&self) -> [u8; CMD_REQ_LEN] {
        let mut b = [0u8; CMD_REQ_LEN];
        b[..8].copy_from_slice(&self.lun);
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16] = self.task_attr;
        b[19..].copy_from_slice(&self.cdb);
        b
    }
}

/// A request-queue response header.
#[derive(Debug, Clone)]
pub struct CmdResp {
    pub sense_len: u32,
    pub resid: u32,
    pub status: u8,
    pub response: u8,
    pub sense: [u8; SENSE_SIZE],
}

impl CmdResp {
    /// A response carrying only a virtio response code (no SCSI status).
    pub fn response(response: u32) -> CmdResp {
        CmdResp {
            sense_len: 0,
            resid: 0,
            status: 0,
            response: response as u8,
            sense: [0; SENSE_SIZE],
        }
    }

    pub fn to_bytes(&self) -> [u8; CMD_RESP_LEN] {
        let mut b = [0u8; CMD_RESP_LEN];
        b[..4].copy_from_slice(&self.sense_len.to_le_bytes());
        b[4..8].copy_from_slice(&self.resid.to_le_bytes());
        b[10] = self.status;
        b[11] = self.response;
        b[12..].copy_from_slice(&self.sense);
        b
    }

    pub fn parse(b: &[u8; CMD_RESP_LEN]) -> CmdResp {
        let mut sense = [0u8; SENSE_SIZE];
        sense.copy_from_slice(&b[12..]);
        CmdResp {
            sense_len: u32::from_le_bytes(b[..4].try_into().unwrap()),
            resid: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            status: b[10],
            response: b[11],
            sense,
        }
    }
}

/// A control-queue TMF request.
#[derive(Debug, Clone, Copy)]
pub struct TmfReq {
    pub subtype: u32,
    pub lun: [u8; 8],
    pub id: u64,
}

impl TmfReq {
    pub fn parse(b: &[u8; TMF_REQ_LEN]) -> TmfReq {
        TmfReq {
            subtype: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            lun: b[8..16].try_into().unwrap(),
            id: u64::from_le_bytes(b[16..24].try_into().unwrap()),
        }
    }

    pub fn to_bytes(&self) -> [u8; TMF_REQ_LEN] {
        let mut b = [0u8; TMF_REQ_LEN];
        b[..4].copy_from_slice(&VIRTIO_SCSI_T_TMF.to_le_bytes());
        b[4..8].copy_from_slice(&self.subtype.to_le_bytes());
        b[8..16].copy_from_slice(&self.lun);
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b
    }
}

/// An event-queue record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub event: u32,
    pub lun: [u8; 8],
    pub reason: u32,
}

impl Event {
    pub fn to_bytes(&self) -> [u8; EVENT_LEN] {
        let mut b = [0u8; EVENT_LEN];
        b[..4].copy_from_slice(&self.event.to_le_bytes());
        b[4..12].copy_from_slice(&self.lun);
        b[12..].copy_from_slice(&self.reason.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8; EVENT_LEN]) -> Event {
        Event {
            event: u32::from_le_bytes(b[..4].try_into().unwrap()),
            lun: b[4..12].try_into().unwrap(),
            reason: u32::from_le_bytes(b[12..].try_into().unwrap()),
        }
    }
}

/// The device configuration space (virtio_scsi_config), as a frontend
/// reading it through GET_CONFIG sees it.
pub fn config_space(num_request_queues: u32) -> [u8; 36] {
    let mut b = [0u8; 36];
    let put =
        |b: &mut [u8; 36], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut b, 0, num_request_queues);
    put(&mut b, 4, 128); // seg_max (QEMU's default for queue size 128 is 126)
    put(&mut b, 8, 0xffff); // max_sectors
    put(&mut b, 12, 128); // cmd_per_lun
    put(&mut b, 16, EVENT_LEN as u32);
    put(&mut b, 20, SENSE_SIZE as u32);
    put(&mut b, 24, CDB_SIZE as u32);
    b[28..30].copy_from_slice(&0u16.to_le_bytes()); // max_channel
    b[30..32].copy_from_slice(&255u16.to_le_bytes()); // max_target
    put(&mut b, 32, 16383); // max_lun
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_format() {
        assert_eq!(
            decode_lun(&[1, 3, 0x40, 5, 0, 0, 0, 0]),
            Some(Address { target: 3, lun: 5 })
        );
        assert_eq!(
            decode_lun(&[1, 0, 0x7f, 0xff, 0, 0, 0, 0]),
            Some(Address {
                target: 0,
                lun: 16383
            })
        );
        // Peripheral addressing works too.
        assert_eq!(
            decode_lun(&[1, 0, 0, 7, 0, 0, 0, 0]),
            Some(Address { target: 0, lun: 7 })
        );
        // REPORT LUNS well-known LUN never matches a mapped LUN.
        let w = decode_lun(&[1, 0, 0xc1, 0x01, 0, 0, 0, 0]).unwrap();
        assert!(w.lun > 0x3fff);
        assert_eq!(decode_lun(&[0, 0, 0x40, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun(&[1, 0, 0x40, 0, 0, 0, 0, 1]), None);
        for l in [0u64, 1, 255, 256, 16383] {
            assert_eq!(decode_lun(&encode_lun(9, l)).unwrap().lun, l);
            assert_eq!(decode_lun(&event_lun(9, l)).unwrap().lun, l);
        }
        assert_eq!(event_lun(1, 1), [1, 1, 0, 1, 0, 0, 0, 0], "as REPORT LUNS");
        assert_eq!(event_lun(1, 300), [1, 1, 0x41, 0x2c, 0, 0, 0, 0]);
    }

    #[test]
    fn header_sizes_match_the_spec() {
        assert_eq!(CMD_REQ_LEN, 51);
        assert_eq!(CMD_RESP_LEN, 108);
        assert_eq!(
            CMD_REQ_LEN,
            std::mem::size_of::<virtio_scsi_cmd_req>(),
            "matches the kernel's struct"
        );
        assert_eq!(CMD_RESP_LEN, std::mem::size_of::<virtio_scsi_cmd_resp>());
        assert_eq!(TMF_REQ_LEN, std::mem::size_of::<virtio_scsi_ctrl_tmf_req>());
        assert_eq!(EVENT_LEN, std::mem::size_of::<virtio_scsi_event>());
        assert_eq!(36, std::mem::size_of::<virtio_scsi_config>());
    }
}
