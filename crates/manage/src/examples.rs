//! One working example per place a verb can go wrong: an error message of
//! `create`, `set` or `get` ends with the command that would have worked
//! there, so nobody has to guess the parameter order or a value's syntax.

use anyhow::anyhow;

use crate::locate::Loc;

/// A `create` that works at `loc` (whose path is `path`).
pub fn create(loc: &Loc, path: &str) -> Option<String> {
    let args = match loc {
        Loc::Plugin(p) => match p.as_str() {
            "fileio" => "disk1 /var/lib/rtarget/disk1.img 1G",
            "block" => "disk2 /dev/sdb",
            "ramdisk" => "ram1 1G",
            // The image's own size applies; a new image needs SIZE first.
            "user:qcow" => "q1 /var/lib/rtarget/q1.qcow2 (an existing image), or: create q1 8G /var/lib/rtarget/q1.qcow2",
            "user:nbd" => "n1 nbd://127.0.0.1:10809/export",
            "user:qemu" => "v1 vmdk//var/lib/rtarget/v1.vmdk",
            _ => "NAME cfgstring=CONFIG",
        },
        Loc::Fabric(_) => "iqn.2026-11.org.example:t1",
        Loc::Target(_) => "2",
        Loc::Luns(..) => "/backstores/fileio/disk1",
        Loc::Portals(..) => "0.0.0.0 3260",
        Loc::Acls(..) => "iqn.1994-05.com.redhat:client1",
        Loc::Acl(..) => "0 0 (mapped LUN 0 to the TPG's lun0)",
        _ => return None,
    };
    Some(format!("{path} create {args}"))
}

/// A `delete` that works at `loc` (whose path is `path`).
pub fn delete(loc: &Loc, path: &str) -> String {
    let arg = match loc {
        Loc::Plugin(_) => " disk1",
        Loc::Fabric(_) => " iqn.2026-11.org.example:t1",
        Loc::Acls(..) => " iqn.1994-05.com.redhat:client1",
        Loc::Acl(..) => " 0 (its mapped LUN 0)",
        _ => " (no arguments: deletes this object)",
    };
    format!("{path} delete{arg}")
}

/// A `set` of `group` that works at `loc`.
pub fn set(loc: &Loc, group: &str) -> Option<&'static str> {
    Some(match (loc, group) {
        (Loc::Tpg(..), "attribute") => "set attribute generate_node_acls=1",
        (Loc::Tpg(..), "parameter") => "set parameter HeaderDigest=CRC32C",
        (Loc::Tpg(..) | Loc::Acl(..), "auth") => "set auth userid=alice password=secret12chars",
        (Loc::Fabric(_), "discovery_auth") => {
            "set discovery_auth enable=1 userid=alice password=secret12chars"
        }
        (Loc::Acl(..), "attribute") => "set attribute dataout_timeout=5",
        (Loc::Object(..), "attribute") => "set attribute emulate_tpu=1",
        _ => return None,
    })
}

/// `err` followed by the example (unless it already shows one).
pub fn attach(err: anyhow::Error, example: Option<impl AsRef<str>>) -> anyhow::Error {
    let msg = format!("{err:#}");
    match example {
        Some(ex) if !msg.contains("e.g.") => anyhow!("{msg}; e.g. {}", ex.as_ref()),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_attached_once() {
        let loc = Loc::Plugin("fileio".into());
        let ex = create(&loc, "/backstores/fileio");
        let e = attach(anyhow!("missing parameter size"), ex.clone()).to_string();
        assert_eq!(
            e,
            "missing parameter size; e.g. /backstores/fileio create disk1 /var/lib/rtarget/disk1.img 1G"
        );
        let e = attach(anyhow!("bad (e.g. 8G)"), ex).to_string();
        assert_eq!(e, "bad (e.g. 8G)");
        assert!(create(&Loc::Root, "/").is_none());
    }
}
