//! INQUIRY: standard data and the VPD pages (SPC-4 6.6, 7.8; SBC-3 6.6).
//! Pages are built into `data_in` directly, then cut to the allocation
//! length (truncation is never an error).

use scsi::cdb::Cdb;

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::{Device, Nexus};

/// Peripheral device type: direct access block device.
const TYPE_DISK: u8 = 0x00;
/// Qualifier 011b + type 1Fh: no logical unit at this LUN.
const NO_LUN: u8 = 0x7f;

/// IEEE company id in the NAA 6 designator. It is the one Linux LIO uses,
/// so an LU moved from LIO with the same `wwn` keeps its identity
/// (multipath and VMware key on the NAA designator).
const NAA_COMPANY_ID: u32 = 0x001405;

/// VPD pages we serve, ascending (SPC-4 requires the list sorted).
const VPD_PAGES: [u8; 7] = [0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2];

pub(crate) fn inquiry(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let evpd = cdb.b(1) & 0x01 != 0;
    let page = cdb.b(2);
    let alloc = usize::from(cdb.be16(3));
    if cdb.b(1) & 0xfe != 0 {
        // CMDDT (obsolete) and reserved bits.
        return Err(CmdError::cdb_field(1));
    }
    if !evpd {
        if page != 0 {
            return Err(CmdError::cdb_field(2));
        }
        standard(ctx.dev, TYPE_DISK, data_in);
        // TPGS: the access types of the ALUA group this port is in.
        let (_, access) = ctx.dev.state.alua.port_group(ctx.nexus);
        data_in[5] |= (access & 0x03) << 4;
        return truncate_to(alloc, data_in);
    }
    let dev = ctx.dev;
    data_in.extend_from_slice(&[TYPE_DISK, page, 0, 0]);
    match page {
        0x00 => data_in.extend_from_slice(&VPD_PAGES),
        0x80 => data_in.extend_from_slice(serial(dev).as_bytes()),
        0x83 => device_identification(dev, ctx.nexus, data_in),
        0x8f => crate::xcopy::vpd_page(data_in),
        0xb0 => block_limits(dev, data_in),
        0xb1 => block_device_characteristics(dev, data_in),
        0xb2 => logical_block_provisioning(dev, data_in),
        _ => return Err(CmdError::cdb_field(2)),
    }
    let page_len = u16::try_from(data_in.len() - 4).unwrap_or(u16::MAX);
    data_in[2..4].copy_from_slice(&page_len.to_be_bytes());
    truncate_to(alloc, data_in)
}

/// INQUIRY addressed to a LUN that is not mapped: standard data with
/// peripheral qualifier 3; VPD requests fail (SPC-4 6.6.2).
pub(crate) fn unmapped_lun(cdb: &Cdb, data_in: &mut Vec<u8>) -> HandlerResult {
    if cdb.b(1) & 0x01 != 0 {
        return Err(CmdError::LunNotSupported);
    }
    if cdb.b(2) != 0 {
        return Err(CmdError::cdb_field(2));
    }
    data_in.clear();
    data_in.resize(36, 0);
    data_in[0] = NO_LUN;
    data_in[2] = 0x06;
    data_in[3] = 0x12;
    data_in[4] = 31;
    truncate_to(usize::from(cdb.be16(3)), data_in)
}

fn padded(out: &mut Vec<u8>, s: &str, width: usize) {
    let start = out.len();
    // SPC-4 4.4.1: ASCII data fields hold 0x20..0x7e only.
    out.extend(s.bytes().filter(|b| (0x20..=0x7e).contains(b)).take(width));
    out.resize(start + width, b' ');
}

fn standard(dev: &Device, pdt: u8, out: &mut Vec<u8>) {
    let o = &dev.options;
    let rmb = if dev.state.medium.removable() {
        0x80
    } else {
        0
    };
    out.extend_from_slice(&[
        pdt, rmb, 0x06, // SPC-4
        0x12, // HISUP, response data format 2
        0,    // additional length, set below
        0x08, // TPGS (set below from the port's ALUA group), 3PC; no PROTECT
        0x00, 0x02, // CMDQUE
    ]);
    padded(
        out,
        if o.vendor.is_empty() {
            "RTARGET"
        } else {
            &o.vendor
        },
        8,
    );
    padded(
        out,
        if o.product.is_empty() {
            &o.name
        } else {
            &o.product
        },
        16,
    );
    padded(
        out,
        if o.revision.is_empty() {
            "0001"
        } else {
            &o.revision
        },
        4,
    );
    out.resize(58, 0);
    // Version descriptors: SAM-5, SPC-4, SBC-3, iSCSI (no version claimed).
    for d in [0x00a0u16, 0x0460, 0x04c0, 0x0960] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.resize(96, 0);
    out[4] = (out.len() - 5) as u8;
}

/// Unit serial number: the wwn, printable ASCII only.
fn serial(dev: &Device) -> String {
    dev.options
        .wwn
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect()
}

/// 16-byte NAA IEEE Registered Extended identifier (NAA 6): company id,
/// then vendor-specific nibbles taken from the hex digits of the wwn.
pub(crate) fn naa6(dev: &Device) -> [u8; 16] {
    let mut nibbles = [0u8; 32];
    nibbles[0] = 0x6;
    for (i, n) in nibbles[1..7].iter_mut().enumerate() {
        *n = ((NAA_COMPANY_ID >> (20 - 4 * i)) & 0xf) as u8;
    }
    let digits = dev.options.wwn.chars().filter_map(|c| c.to_digit(16));
    for (slot, d) in nibbles[7..].iter_mut().zip(digits) {
        *slot = d as u8;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (nibbles[2 * i] << 4) | nibbles[2 * i + 1];
    }
    out
}

/// Designation descriptor header (SPC-4 7.8.6.1).
/// `proto`: the nexus' SCSI transport protocol ([`crate::proto`]).
fn designator(out: &mut Vec<u8>, proto: u8, code_set: u8, piv_assoc_type: u8, body: &[u8]) {
    out.push((proto << 4) | code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(body.len() as u8);
    out.extend_from_slice(body);
}

const CODE_BINARY: u8 = 1;
const CODE_ASCII: u8 = 2;
const CODE_UTF8: u8 = 3;
const PIV: u8 = 0x80;
const ASSOC_LU: u8 = 0x00;
const ASSOC_PORT: u8 = 0x10;

fn device_identification(dev: &Device, nexus: &Nexus, out: &mut Vec<u8>) {
    let proto = crate::proto::of_initiator(&nexus.initiator_port);
    designator(out, proto, CODE_BINARY, ASSOC_LU | 0x03, &naa6(dev));

    let mut t10 = Vec::with_capacity(8 + dev.options.wwn.len());
    let vendor = if dev.options.vendor.is_empty() {
        "RTARGET"
    } else {
        &dev.options.vendor
    };
    padded(&mut t10, vendor, 8);
    t10.extend(serial(dev).bytes().take(200));
    designator(out, proto, CODE_ASCII, ASSOC_LU | 0x01, &t10);

    let rel = nexus.relative_port_id.to_be_bytes();
    designator(
        out,
        proto,
        CODE_BINARY,
        PIV | ASSOC_PORT | 0x04,
        &[0, 0, rel[0], rel[1]],
    );

    // Target port group: the ALUA group of the port this nexus uses.
    let (group, _) = dev.state.alua.port_group(nexus);
    let g = group.to_be_bytes();
    designator(
        out,
        proto,
        CODE_BINARY,
        PIV | ASSOC_PORT | 0x05,
        &[0, 0, g[0], g[1]],
    );

    // SCSI name string: NUL-terminated, padded to a multiple of 4 (SPC-4 7.8.6.11).
    let mut name: Vec<u8> = nexus.target_port.bytes().take(250).collect();
    name.push(0);
    while !name.len().is_multiple_of(4) {
        name.push(0);
    }
    designator(out, proto, CODE_UTF8, PIV | ASSOC_PORT | 0x08, &name);
}

fn put32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn block_limits(dev: &Device, out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + 0x3c, 0);
    // `p[k]` is page byte k + 4 (after the 4-byte VPD header).
    let p = &mut out[base..];
    let max_blocks = dev.max_transfer_blocks();
    // p[0]: WSNZ = 0, WRITE SAME with 0 blocks means "to the last LBA".
    p[1] = crate::rw::MAX_COMPARE_AND_WRITE_BLOCKS;
    let per_physical = 1u32 << dev.lbppb_exponent();
    p[2..4].copy_from_slice(&(per_physical as u16).to_be_bytes());
    put32(p, 4, max_blocks); // maximum transfer length
    put32(p, 8, max_blocks); // optimal transfer length
    put32(p, 12, max_blocks); // maximum prefetch length
    if dev.thin() {
        put32(p, 16, u32::MAX); // maximum UNMAP LBA count
        put32(p, 20, crate::rw::MAX_UNMAP_DESCRIPTORS);
        put32(p, 24, per_physical); // optimal unmap granularity
    }
    // Maximum WRITE SAME length.
    p[32..40].copy_from_slice(&u64::from(max_blocks).to_be_bytes());
    // WRITE ATOMIC(16): maximum atomic transfer length, alignment and
    // granularity in whole physical blocks; atomic boundaries not supported.
    put32(p, 40, dev.max_atomic_blocks());
    let unit = u32::try_from(dev.atomic_granularity()).unwrap_or(1);
    put32(p, 44, unit);
    put32(p, 48, unit);
}

fn block_device_characteristics(dev: &Device, out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + 0x3c, 0);
    let rate: u16 = if dev.state.caps.rotational { 0 } else { 1 };
    out[base..base + 2].copy_from_slice(&rate.to_be_bytes());
    if dev.thin() {
        // WABEREQ=01: reads after SANITIZE BLOCK ERASE succeed (zeroes).
        out[base + 3] = 0x40;
    }
    if dev.state.caps.crypto_erase {
        // WACEREQ=01: reads after SANITIZE CRYPTO ERASE succeed, with
        // whatever the old ciphertext decrypts to under the new key.
        out[base + 3] |= 0x10;
    }
}

fn logical_block_provisioning(dev: &Device, out: &mut Vec<u8>) {
    // Threshold exponent, flags, provisioning type, reserved.
    let mut page = [0u8; 4];
    if dev.thin() {
        page[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
        page[2] = 0x02; // thin provisioned
    }
    out.extend_from_slice(&page);
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    /// LIO's derivation: NAA 6, company id 001405, then the first 25 hex
    /// digits of the wwn (the same digits `config::naa::serial_digits`
    /// compares to refuse colliding wwns); the rest of the wwn is lost.
    #[test]
    fn naa_designator_carries_the_first_25_hex_digits_of_the_wwn() {
        let naa = |wwn: &str| {
            let store = std::sync::Arc::new(backstore::NullBackstore::new(1 << 20));
            super::naa6(&crate::Device::new(
                crate::DeviceOptions::new("n", wwn),
                store,
            ))
        };
        let hex: String = naa(WWN).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, format!("6001405{}", "6a1c0f2e12344bcd9ef001234"));
        assert_eq!(
            naa("0f0e0d0c-0b0a-4908-8706-050403020100"),
            naa("0f0e0d0c-0b0a-4908-8706-0504030201ff"),
            "equal in the first 25 digits: one designator"
        );
    }

    #[test]
    fn standard_inquiry_layout() {
        let t = Rig::new();
        let (st, d) = t.ok(&[0x12, 0, 0, 0, 255, 0]);
        assert_eq!(st, crate::Status::Good);
        assert_eq!(d.len(), 96);
        assert_eq!(d[0], 0);
        assert_eq!(d[2], 6);
        assert_eq!(d[3] & 0x0f, 2);
        assert_eq!(usize::from(d[4]), d.len() - 5);
        assert_eq!(&d[8..16], b"RTARGET ");
        assert_eq!(&d[16..32], b"disk0           ");
        assert_eq!(&d[58..60], &[0x00, 0xa0]);
    }

    #[test]
    fn allocation_length_truncates() {
        let t = Rig::new();
        for alloc in [0u8, 5, 36] {
            let (_, d) = t.ok(&[0x12, 0, 0, 0, alloc, 0]);
            assert_eq!(d.len(), usize::from(alloc));
        }
        let (_, d) = t.ok(&[0x12, 1, 0x83, 0, 8, 0]);
        assert_eq!(d.len(), 8);
    }

    #[test]
    fn invalid_fields() {
        let t = Rig::new();
        t.expect_sense(&[0x12, 0, 0x80, 0, 255, 0], 5, 0x24, 0); // page without EVPD
        t.expect_sense(&[0x12, 1, 0x42, 0, 255, 0], 5, 0x24, 0); // unknown page
        t.expect_sense(&[0x12, 2, 0, 0, 255, 0], 5, 0x24, 0); // CMDDT
    }

    #[test]
    fn supported_pages_and_serial() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x12, 1, 0, 0, 255, 0]);
        assert_eq!(&d[..4], &[0, 0, 0, 7]);
        assert_eq!(&d[4..], &[0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2]);
        let (_, d) = t.ok(&[0x12, 1, 0x80, 0, 255, 0]);
        assert_eq!(&d[4..], WWN.as_bytes());
        assert_eq!(usize::from(d[3]), WWN.len());
    }

    #[test]
    fn device_identification_designators() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x12, 1, 0x83, 1, 0, 0]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        let mut kinds = Vec::new();
        let mut i = 4;
        while i + 4 <= d.len() {
            kinds.push((d[i + 1] & 0x30, d[i + 1] & 0x0f));
            if d[i + 1] & 0x0f == 3 {
                assert_eq!(d[i + 4] >> 4, 6, "NAA 6");
                assert_eq!(d[i + 3], 16);
            }
            if d[i + 1] & 0x0f == 4 {
                assert_eq!(&d[i + 4..i + 8], &[0, 0, 0, 1], "relative port 1");
            }
            i += 4 + usize::from(d[i + 3]);
        }
        assert_eq!(i, d.len());
        assert_eq!(kinds, vec![(0, 3), (0, 1), (0x10, 4), (0x10, 5), (0x10, 8)]);
        assert_eq!(d[4] >> 4, 5, "iSCSI");
    }

    /// A vhost / loopback nexus (a bare naa. initiator port, as LIO's
    /// tcm_vhost names it) reports SAS as its protocol, as tcm_vhost does
    /// for naa. WWNs; the SCSI name string is the target port's.
    #[test]
    fn sas_nexus_reports_the_sas_protocol() {
        let t = Rig::new();
        let vhost = crate::Nexus {
            id: 77,
            initiator_port: "naa.5001405f00d00001".into(),
            target_port: "naa.5001405abcdef012,t,0x0001".into(),
            relative_port_id: 1,
            tpg_tag: 1,
        };
        t.run_as(&vhost, &[0, 0, 0, 0, 0, 0], &[]);
        let (o, d) = t.run_as(&vhost, &[0x12, 1, 0x83, 1, 0, 0], &[]);
        assert_eq!(o.status, crate::Status::Good);
        let mut i = 4;
        while i + 4 <= d.len() {
            assert_eq!(d[i] >> 4, 6, "SAS in designator at {i}");
            i += 4 + usize::from(d[i + 3]);
        }
        assert!(d.windows(29).any(|w| w == b"naa.5001405abcdef012,t,0x0001"));
    }

    #[test]
    fn thin_pages() {
        let t = Rig::thin();
        let (_, d) = t.ok(&[0x12, 1, 0xb2, 0, 255, 0]);
        assert_eq!(d[5] & 0xe4, 0xe4);
        let (_, d) = t.ok(&[0x12, 1, 0xb0, 0, 255, 0]);
        assert_eq!(d.len(), 0x40);
        assert_ne!(&d[20..24], &[0, 0, 0, 0], "max unmap LBA count");
        assert_eq!(
            &d[44..48],
            &16384u32.to_be_bytes(),
            "max atomic transfer length"
        );
        assert!(
            d[44..48] <= d[8..12],
            "atomic length within max transfer length"
        );
        assert_eq!(&d[48..52], &8u32.to_be_bytes(), "atomic alignment");
        assert_eq!(&d[52..56], &8u32.to_be_bytes(), "atomic granularity");
        let thick = Rig::new();
        let (_, d) = thick.ok(&[0x12, 1, 0xb2, 0, 255, 0]);
        assert_eq!(d[5], 0);
        let (_, d) = thick.ok(&[0x12, 1, 0xb1, 0, 255, 0]);
        assert_eq!(&d[4..6], &[0, 1], "non-rotating");
    }

    #[test]
    fn unmapped_lun_inquiry() {
        let t = Rig::new();
        let (st, d) = t.run_lun(7, &[0x12, 0, 0, 0, 96, 0], &[]);
        assert_eq!(st.status, crate::Status::Good);
        assert_eq!(d[0], 0x7f);
    }
}
