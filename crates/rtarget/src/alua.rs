//! ALUA on the running devices (the config side, targetcli's `alua`
//! verbs, is `manage::alua`): [`apply`] hands every device its groups and
//! the target ports that map it, [`sync_states`] copies states initiators
//! changed with SET TARGET PORT GROUPS back into the configuration, so
//! they are shown and saved.

use std::collections::HashMap;
use std::sync::Arc;

use config::alua::{groups_of, AluaTpg};
use config::{SaveConfig, StorageObject, DEFAULT_TG_PT_GP};
use target_core::{AccessState, AluaGroup, AluaPort, Device};

/// The iSCSI fabric's name of a target port (as its sessions report it in
/// `Nexus::target_port`): `IQN,t,0xTAG`.
pub fn iscsi_target_port(iqn: &str, tag: u16) -> String {
    format!("{iqn},t,0x{tag:04x}")
}

fn core_group(g: &AluaTpg) -> AluaGroup {
    let flag = |k: &str| g.get(k).unwrap_or(0) != 0;
    let mut supported = 0;
    for (k, bit) in [
        (
            "alua_support_transitioning",
            target_core::alua::SUP_TRANSITIONING,
        ),
        ("alua_support_offline", target_core::alua::SUP_OFFLINE),
        (
            "alua_support_lba_dependent",
            target_core::alua::SUP_LBA_DEPENDENT,
        ),
        (
            "alua_support_unavailable",
            target_core::alua::SUP_UNAVAILABLE,
        ),
        ("alua_support_standby", target_core::alua::SUP_STANDBY),
        (
            "alua_support_active_nonoptimized",
            target_core::alua::SUP_NONOPTIMIZED,
        ),
        (
            "alua_support_active_optimized",
            target_core::alua::SUP_OPTIMIZED,
        ),
    ] {
        if flag(k) {
            supported |= bit;
        }
    }
    let num = |k: &str| g.get(k).unwrap_or(0);
    AluaGroup {
        name: g.name.clone(),
        id: u16::try_from(g.id()).unwrap_or(0),
        // Validation refused other codes; fall back to the default state.
        state: AccessState::from_code(g.state() as u8).unwrap_or(AccessState::ActiveOptimized),
        access_type: (num("alua_access_type") & 0x3) as u8,
        preferred: flag("preferred"),
        supported,
        status: num("alua_access_status").min(2) as u8,
        nonop_delay_msecs: num("nonop_delay_msecs"),
        trans_delay_msecs: num("trans_delay_msecs"),
        implicit_trans_secs: num("implicit_trans_secs"),
    }
}

/// Give every device its groups and the target ports that map it. Only
/// what changed takes effect (a repeated state keeps one set by STPG).
pub fn apply(cfg: &SaveConfig, objects: &HashMap<String, (StorageObject, Arc<Device>)>) {
    for so in &cfg.storage_objects {
        let Some((_, dev)) = objects.get(&so.path()) else {
            continue;
        };
        let groups: Vec<AluaTpg> = groups_of(so.alua_tpgs.as_deref());
        let mut ports = Vec::new();
        for t in cfg.targets.iter().filter(|t| t.is_served()) {
            for (tag, tpg) in t.tagged_tpgs() {
                let Some(lun) = tpg.luns.iter().find(|l| l.storage_object == so.path()) else {
                    continue;
                };
                let name = lun
                    .alua_tg_pt_gp_name
                    .as_deref()
                    .unwrap_or(DEFAULT_TG_PT_GP);
                let group = groups
                    .iter()
                    .find(|g| g.name == name)
                    .map_or(0, AluaTpg::id);
                // A vhost target port is named like an iSCSI one (see
                // vhost_scsi's nexus), with its own relative port range.
                let relative_port_id = if t.is_vhost() {
                    manage::vhost_port_id(cfg, &t.wwn)
                } else {
                    manage::relative_port_id(cfg, &t.wwn, tag)
                };
                ports.push(AluaPort {
                    target_port: iscsi_target_port(&t.wwn, tag),
                    relative_port_id,
                    group: u16::try_from(group).unwrap_or(0),
                });
            }
        }
        let core: Vec<AluaGroup> = groups.iter().map(core_group).collect();
        dev.alua_configure(&core, &ports);
    }
}

/// Copy the devices' current states and statuses (changed by STPG) into
/// `cfg`. Returns whether anything changed.
pub fn sync_states(
    cfg: &mut SaveConfig,
    objects: &HashMap<String, (StorageObject, Arc<Device>)>,
) -> bool {
    let mut changed = false;
    for so in &mut cfg.storage_objects {
        let Some((_, dev)) = objects.get(&so.path()) else {
            continue;
        };
        let live = dev.alua_groups();
        let Some(groups) = so.alua_tpgs.as_mut() else {
            // Never configured: only STPG on the default group can differ.
            let d = live.iter().find(|g| g.id == 0);
            if d.is_some_and(|g| g.state != AccessState::ActiveOptimized) {
                let mut all = groups_of(None);
                if let (Some(g), Some(c)) = (d, all.first_mut()) {
                    c.alua_access_state = Some(u32::from(g.state.code()));
                    c.alua_access_status = Some(u32::from(g.status));
                }
                so.alua_tpgs = Some(all);
                changed = true;
            }
            continue;
        };
        for g in groups.iter_mut() {
            let Some(l) = live.iter().find(|l| u32::from(l.id) == g.id()) else {
                continue;
            };
            // A transition in progress is not a state to save.
            if l.state == AccessState::Transitioning && g.state() != 15 {
                continue;
            }
            let (state, status) = (u32::from(l.state.code()), u32::from(l.status));
            if g.state() != state {
                g.alua_access_state = Some(state);
                g.alua_access_status = Some(status);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use manage::alua::{create, set, target};
    use manage::args::Args;

    const IQN: &str = "iqn.2026-11.org.example:t1";

    fn cfg() -> SaveConfig {
        serde_json::from_value(serde_json::json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
            "targets": [{"fabric": "iscsi", "wwn": IQN, "tpgs": [
                {"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"}]},
                {"tag": 2, "luns": [{"index": 3, "storage_object": "/backstores/ramdisk/r0"}]}
            ]}]
        }))
        .unwrap()
    }

    fn kv(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.to_string(), v.to_string())]
    }

    const ALUA: &str = "/backstores/ramdisk/r0/alua";

    /// `apply` registers one port per TPG mapping the object; `sync_states`
    /// brings a state changed on the device back into the config.
    #[test]
    fn apply_and_sync_follow_the_device() {
        let mut c = cfg();
        create(&mut c, 0, &Args::from_words(&["sb", "2"]).unwrap()).unwrap();
        c.targets[0].tpgs[1].luns[0].alua_tg_pt_gp_name = Some("sb".into());
        let dev = Device::new(
            target_core::DeviceOptions::new("r0", "0f0e0d0c-0b0a-4908-8706-050403020100"),
            Arc::new(backstore::NullBackstore::new(1 << 20)),
        );
        let mut objects = HashMap::new();
        objects.insert(
            "/backstores/ramdisk/r0".to_string(),
            (c.storage_objects[0].clone(), dev.clone()),
        );
        apply(&c, &objects);
        let g = dev.alua_groups();
        assert_eq!(g.iter().map(|g| g.id).collect::<Vec<_>>(), vec![0, 2]);
        assert!(!sync_states(&mut c, &objects), "nothing changed yet");
        // Management change reaches the device.
        let at = target(&c, &format!("{ALUA}/sb")).unwrap().unwrap();
        set(&mut c, at, &kv("alua_access_state", "3")).unwrap();
        apply(&c, &objects);
        assert_eq!(dev.alua_groups()[1].state, AccessState::Unavailable);
        // A device-side change (as STPG makes) is copied back.
        let mut forced = c.clone();
        forced.storage_objects[0].alua_tpgs.as_mut().unwrap()[1].alua_access_state = Some(2);
        apply(&forced, &objects);
        assert!(sync_states(&mut c, &objects));
        assert_eq!(
            c.storage_objects[0].alua_tpgs.as_ref().unwrap()[1].state(),
            2
        );
        assert_eq!(iscsi_target_port(IQN, 2), format!("{IQN},t,0x0002"));
    }
}
