//! iSCSI (RFC 7143) wire format: PDU headers, login/text key=value parsing and
//! negotiation rules, CRC32C digests. Sans-I/O: nothing here touches a socket,
//! and nothing panics on peer bytes (every length is checked).

pub mod bhs;
pub mod chap;
pub mod digest;
mod layout;
pub mod name;
pub mod negotiate;
pub mod pdu;
pub mod request;
pub mod response;
pub mod text;
pub mod tmf;

pub use bhs::{Bhs, Opcode, BHS_LEN, RESERVED_TAG};
pub use digest::Digests;
pub use pdu::{parse_frame, Frame, FrameError};
