//! What `/vhost create` and `/loopback create` share: both fabrics name a
//! target by an `naa.` WWN (LIO's `naa.5001405` and 9 hex digits when one
//! is generated) and give it one TPG, `tpg1`, whose nexus derives from the
//! WWN.

use anyhow::{bail, Result};
use config::{SaveConfig, Target, Tpg};
use serde_json::Map;

use crate::locate::iscsi_target;
use crate::ops::Ctx;

/// The new target's WWN: `given` (case folded) or one generated from a new
/// UUID; refused when it is no `naa.` WWN or a target has it already.
pub(crate) fn new_wwn(
    cfg: &SaveConfig,
    given: Option<&str>,
    ctx: &Ctx,
    fabric: &str,
) -> Result<String> {
    let wwn = match given {
        Some(w) => w.to_ascii_lowercase(),
        None => {
            let hex: String = (ctx.new_uuid)()?
                .chars()
                .filter(char::is_ascii_hexdigit)
                .collect();
            config::vhost::wwn_from(&hex[hex.len() - 9..])
        }
    };
    if !config::vhost::valid_wwn(&wwn) {
        bail!("{wwn:?} is not a {fabric} WWN (naa. and 16 hex digits)");
    }
    if iscsi_target(cfg, &wwn).is_some() {
        bail!("target {wwn} already exists");
    }
    Ok(wwn)
}

/// Add target `wwn` of `fabric` with its `tpg1` (enabled), whose nexus is
/// `nexus`; the message targetcli prints.
pub(crate) fn add_target(
    cfg: &mut SaveConfig,
    fabric: &str,
    wwn: String,
    extra: Map<String, serde_json::Value>,
    nexus: &str,
) -> String {
    let msg = format!("Created target {wwn}.\nCreated TPG 1 (nexus {nexus}).");
    cfg.targets.push(Target {
        fabric: fabric.into(),
        wwn,
        tpgs: vec![Tpg {
            tag: Some(1),
            enable: Some(true),
            ..Tpg::default()
        }],
        extra,
    });
    msg
}
