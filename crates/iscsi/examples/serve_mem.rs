//! Serve one target with one RAM LUN for manual tests with real initiators:
//! `cargo run --release -p iscsi --example serve_mem -- PORT [SIZE_MIB] [IQN]`.
//! `CHAP=user:secret` in the environment turns on CHAP authentication.

use std::io;
use std::sync::Arc;

use backstore::{Backstore, Capabilities};
use iscsi::{ChapCredentials, IscsiServer, TargetConfig, TpgConfig};
use target_core::{Device, DeviceOptions, Lun, LunTable};

/// RAM with positional access; a sharded lock would be faster, but the
/// point here is the fabric.
struct Mem(std::sync::RwLock<Vec<u8>>);

impl Backstore for Mem {
    fn size(&self) -> u64 {
        self.0.read().map(|d| d.len() as u64).unwrap_or(0)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.0.read().map_err(|_| io::Error::other("poisoned"))?;
        let o = offset as usize;
        buf.copy_from_slice(d.get(o..o + buf.len()).ok_or(io::ErrorKind::InvalidInput)?);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.0.write().map_err(|_| io::Error::other("poisoned"))?;
        let o = offset as usize;
        d.get_mut(o..o + buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?
            .copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(13260);
    let mib: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(256);
    let iqn = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "iqn.2026-11.org.rtarget:mem".to_string());
    let dev = Device::new(
        DeviceOptions::new("mem0", "6e1c3f9a-1b2c-4d5e-8f90-0123456789ab"),
        Arc::new(Mem(std::sync::RwLock::new(vec![0; mib << 20]))),
    );
    let luns = Arc::new(LunTable {
        luns: vec![Lun {
            id: 0,
            device: dev,
            write_protect: false,
        }],
    });
    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    let chap = std::env::var("CHAP").ok().and_then(|c| {
        c.split_once(':').map(|(u, s)| ChapCredentials {
            userid: u.to_string(),
            password: s.to_string(),
            mutual_userid: None,
            mutual_password: None,
        })
    });
    let attributes = config::TpgAttributes {
        generate_node_acls: true,
        authentication: chap.is_some().then_some(true),
        ..Default::default()
    };
    let server = IscsiServer::new();
    server.set_target(TargetConfig {
        iqn: iqn.clone(),
        tpgs: vec![TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![addr],
            luns,
            acls: vec![],
            attributes,
            chap,
            offer: Default::default(),
        }],
    });
    let bound = server.listen(addr)?;
    println!("serving {iqn} on {bound}");
    loop {
        std::thread::park();
    }
}
