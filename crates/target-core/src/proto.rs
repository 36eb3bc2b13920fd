//! SCSI transport protocol identifiers (SPC-4 table 362) of a nexus, as
//! VPD 0x83 and PERSISTENT RESERVE TransportIDs report them. The core
//! knows a port only by its name, so the protocol follows from it the way
//! LIO's fabrics do: iSCSI initiator ports carry an ISID (`name,i,0x..`);
//! the SAS-like fabrics (LIO's tcm_vhost and tcm_loop, rtarget's vhost and
//! loopback) name their I_T nexus by a bare `naa.<16 hex>` WWN and report
//! SAS, whose TransportID is the 8-byte address (SPC-4 7.6.4.7).

/// iSCSI.
pub(crate) const PROTO_ISCSI: u8 = 0x5;
/// SAS Serial SCSI Protocol.
pub(crate) const PROTO_SAS: u8 = 0x6;

/// The 8-byte SAS address of a bare `naa.<16 hex>` port name.
pub(crate) fn sas_address(name: &str) -> Option<[u8; 8]> {
    let hex = name
        .strip_prefix("naa.")
        .or_else(|| name.strip_prefix("NAA."))?;
    if hex.len() != 16 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut a = [0u8; 8];
    for (i, b) in a.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(a)
}

/// The protocol of an initiator port name (a nexus' or a registrant's).
/// An iSCSI name of the `naa.` form registered without an ISID (a device
/// name from a SPEC_I_PT list) reads as SAS too: nothing in a bare name
/// tells them apart.
pub(crate) fn of_initiator(name: &str) -> u8 {
    if !name.contains(",i,") && sas_address(name).is_some() {
        PROTO_SAS
    } else {
        PROTO_ISCSI
    }
}

/// The SAS name of an address, as the fabric names its nexus.
pub(crate) fn sas_name(a: &[u8]) -> String {
    let mut s = String::from("naa.");
    for b in a {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_the_port_name() {
        assert_eq!(
            of_initiator("iqn.2026-01.x:a,i,0x23d000000001"),
            PROTO_ISCSI
        );
        assert_eq!(of_initiator("iqn.2026-01.x:a"), PROTO_ISCSI);
        assert_eq!(of_initiator("naa.5001405f00d00001"), PROTO_SAS);
        assert_eq!(of_initiator("naa.5001405f00d00001,i,0x1"), PROTO_ISCSI);
        assert_eq!(
            of_initiator("naa.5001405f00d0000"),
            PROTO_ISCSI,
            "15 digits"
        );
        let a = sas_address("naa.5001405F00D00001").unwrap();
        assert_eq!(a, [0x50, 0x01, 0x40, 0x5f, 0x00, 0xd0, 0x00, 0x01]);
        assert_eq!(sas_name(&a), "naa.5001405f00d00001");
    }
}
