//! SCSI wire types: opcodes, CDB field views, sense data, status codes, LUN
//! encoding, VPD and mode page layouts. No I/O and no policy: the target core
//! decides what to answer, this crate only knows how the bytes look.

pub mod cdb;
pub mod lun;
pub mod opcode;
pub mod sense;

pub use cdb::{CdbError, RwCdb};
pub use sense::{Asc, Sense, SenseKey};
