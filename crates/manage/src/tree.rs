//! The management object tree: targetcli's paths (`/backstores/fileio/NAME`,
//! `/iscsi/WWN/tpgN/{luns,acls,portals}`, `/loopback`, `/vhost`) derived
//! from the live saveconfig, with targetcli's one-line summaries, and the
//! `ls` rendering (`o- name ..... [summary]`) in configshell's layout.
//!
//! The tree is a view: it is rebuilt from the configuration on every
//! request, so it can never disagree with what is saved and served.

use config::{MappedLun, NodeAcl, Portal, SaveConfig, StorageObject, Target, Tpg};
use serde::{Deserialize, Serialize};

/// Backstore plugins shown under `/backstores` (the ones rtarget serves).
pub const PLUGINS: [&str; 6] = [
    "block",
    "fileio",
    "ramdisk",
    "user:nbd",
    "user:qcow",
    "user:qemu",
];
/// Every plugin directory under `/backstores`: [`PLUGINS`] plus
/// `user:NAME` for each registered handler ([`crate::handlers`]), sorted.
pub fn plugins() -> Vec<String> {
    let mut all: Vec<String> = PLUGINS.iter().map(|p| p.to_string()).collect();
    for p in crate::handlers::user_plugins() {
        if !all.contains(&p) {
            all.push(p);
        }
    }
    all.sort();
    all
}

/// Fabric roots shown at the top level besides `backstores`.
pub const FABRICS: [&str; 3] = config::fabric::ALL;
/// rtslib's name for the ALUA group every LUN starts in.
pub const DEFAULT_TG_PT_GP: &str = "default_tg_pt_gp";

/// One node of the tree, as sent to API clients (a wire type of the
/// management API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub path: String,
    /// The text between the brackets in `ls`.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

impl Node {
    fn new(parent: &str, name: &str, summary: impl Into<String>) -> Node {
        let path = if parent == "/" {
            format!("/{name}")
        } else {
            format!("{parent}/{name}")
        };
        Node {
            name: name.to_string(),
            path,
            summary: summary.into(),
            children: Vec::new(),
        }
    }

    /// The node at absolute `path` (normalised, see [`normalize`]).
    pub fn find(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.iter().find(|c| c.name == part)?;
        }
        Some(node)
    }

    /// A copy cut `depth` levels below this node (`None`: everything).
    pub fn pruned(&self, depth: Option<usize>) -> Node {
        let mut n = self.clone();
        match depth {
            Some(0) => n.children.clear(),
            Some(d) => {
                n.children = self
                    .children
                    .iter()
                    .map(|c| c.pruned(Some(d - 1)))
                    .collect()
            }
            None => {}
        }
        n
    }
}

/// Build the whole tree. `size_of` gives the live size of a storage object
/// (by its `/backstores/...` path) when the config does not hold one.
pub fn build(cfg: &SaveConfig, size_of: &dyn Fn(&str) -> Option<u64>) -> Node {
    build_live(cfg, size_of, &|_| None)
}

/// The live state `ls` shows beside the configuration.
pub struct Live<'a> {
    /// The attached guest's nexus of vhost target `wwn`, if one is attached.
    pub guest_of: &'a dyn Fn(&str) -> Option<String>,
    /// The block device (/dev/ublkbN) of loopback target `wwn`'s LUN.
    pub disk_of: &'a dyn Fn(&str, u64) -> Option<String>,
}

/// [`build`] with the live state of vhost and loopback targets.
pub fn build_with(cfg: &SaveConfig, size_of: &dyn Fn(&str) -> Option<u64>, live: &Live) -> Node {
    let mut root = build_live(cfg, size_of, live.guest_of);
    if let Some(fnode) = root
        .children
        .iter_mut()
        .find(|n| n.name == config::fabric::LOOPBACK)
    {
        for tn in fnode.children.iter_mut() {
            if let Some(t) = cfg.loopback_targets().find(|t| t.wwn == tn.name) {
                loopback_view(t, tn, live.disk_of);
            }
        }
    }
    root
}

/// [`build`] with the live state of vhost targets: `guest_of(wwn)` is the
/// attached guest's nexus, if one is attached.
pub fn build_live(
    cfg: &SaveConfig,
    size_of: &dyn Fn(&str) -> Option<u64>,
    guest_of: &dyn Fn(&str) -> Option<String>,
) -> Node {
    let mut root = Node {
        name: "/".into(),
        path: "/".into(),
        summary: "...".into(),
        children: Vec::new(),
    };
    let mut backstores = Node::new("/", "backstores", "...");
    for plugin in plugins() {
        let objects: Vec<&StorageObject> = cfg
            .storage_objects
            .iter()
            .filter(|so| so.ui_plugin() == plugin)
            .collect();
        let mut pn = Node::new(
            &backstores.path,
            &plugin,
            format!("Storage Objects: {}", objects.len()),
        );
        for so in objects {
            let mut on = Node::new(&pn.path, &so.name, object_summary(cfg, so, size_of));
            let groups = config::alua::groups_of(so.alua_tpgs.as_deref());
            let mut alua = Node::new(&on.path, "alua", format!("ALUA Groups: {}", groups.len()));
            for g in &groups {
                alua.children.push(Node::new(
                    &alua.path,
                    &g.name,
                    format!("ALUA state: {}", g.state_name()),
                ));
            }
            sort(&mut alua.children);
            on.children.push(alua);
            pn.children.push(on);
        }
        sort(&mut pn.children);
        backstores.children.push(pn);
    }
    root.children.push(backstores);
    for fabric in FABRICS {
        let targets: Vec<&Target> = cfg.targets.iter().filter(|t| t.fabric == fabric).collect();
        let mut fnode = Node::new("/", fabric, format!("Targets: {}", targets.len()));
        for t in targets {
            let mut tn = target_node(cfg, &fnode.path, t);
            if t.is_vhost() {
                vhost_view(t, &mut tn, guest_of(&t.wwn));
            }
            fnode.children.push(tn);
        }
        sort(&mut fnode.children);
        root.children.push(fnode);
    }
    root
}

fn target_node(cfg: &SaveConfig, parent: &str, t: &Target) -> Node {
    let mut tn = Node::new(parent, &t.wwn, format!("TPGs: {}", t.tpgs.len()));
    for (tag, tpg) in t.tagged_tpgs() {
        let mut gn = Node::new(&tn.path, &format!("tpg{tag}"), tpg_summary(tpg));
        let mut acls = Node::new(&gn.path, "acls", format!("ACLs: {}", tpg.node_acls.len()));
        for acl in &tpg.node_acls {
            acls.children.push(acl_node(cfg, &acls.path, tpg, acl));
        }
        sort(&mut acls.children);
        let mut luns = Node::new(&gn.path, "luns", format!("LUNs: {}", tpg.luns.len()));
        for lun in &tpg.luns {
            let dev = find_object(cfg, &lun.storage_object)
                .and_then(|so| so.dev.clone())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let so_name = lun
                .storage_object
                .strip_prefix("/backstores/")
                .unwrap_or(&lun.storage_object);
            let group = lun
                .alua_tg_pt_gp_name
                .as_deref()
                .unwrap_or(DEFAULT_TG_PT_GP);
            luns.children.push(Node::new(
                &luns.path,
                &format!("lun{}", lun.index),
                format!("{so_name}{dev} ({group})"),
            ));
        }
        sort(&mut luns.children);
        let mut portals = Node::new(
            &gn.path,
            "portals",
            format!("Portals: {}", tpg.portals.len()),
        );
        for p in &tpg.portals {
            let summary = if p.iser == Some(true) {
                "iser"
            } else if p.offload == Some(true) {
                "offload"
            } else {
                "OK"
            };
            portals
                .children
                .push(Node::new(&portals.path, &portal_name(p), summary));
        }
        sort(&mut portals.children);
        gn.children = vec![acls, luns, portals];
        tn.children.push(gn);
    }
    sort(&mut tn.children);
    tn
}

fn acl_node(cfg: &SaveConfig, parent: &str, tpg: &Tpg, acl: &NodeAcl) -> Node {
    let mut msg = Vec::new();
    // What the daemon serves (config's typed reading, defaults included).
    let a = config::TpgAttributes::parse(&tpg.attributes, !tpg.node_acls.is_empty())
        .unwrap_or_default();
    let auth = a.authentication == Some(true);
    let has = |k: &str| {
        acl.extra
            .get(k)
            .is_some_and(|v| !config::value_string(v).is_empty())
    };
    // An ACL with credentials is always checked with them (as in LIO for
    // explicit ACLs, demo mode or not).
    if has("chap_userid") && has("chap_password") {
        msg.push(
            if has("chap_mutual_userid") && has("chap_mutual_password") {
                "mutual auth".to_string()
            } else {
                "1-way auth".to_string()
            },
        );
    } else if auth {
        if a.generate_node_acls {
            msg.push("auth via tpg".to_string());
        } else if acl.extra.contains_key("chap_mutual_userid") {
            msg.push("mutual auth".to_string());
        } else {
            msg.push("1-way auth".to_string());
        }
    }
    msg.push(format!("Mapped LUNs: {}", acl.mapped_luns.len()));
    let mut an = Node::new(parent, &acl.node_wwn, msg.join(", "));
    for m in &acl.mapped_luns {
        an.children.push(Node::new(
            &an.path,
            &format!("mapped_lun{}", m.index),
            mapped_lun_summary(cfg, tpg, m),
        ));
    }
    sort(&mut an.children);
    an
}

fn mapped_lun_summary(cfg: &SaveConfig, tpg: &Tpg, m: &MappedLun) -> String {
    let mode = if m.write_protect { "ro" } else { "rw" };
    match tpg.luns.iter().find(|l| l.index == m.tpg_lun) {
        Some(lun) => {
            let so = find_object(cfg, &lun.storage_object)
                .map(|so| format!("{}/{}", so.plugin, so.name))
                .unwrap_or_else(|| "BROKEN STORAGE LINK".into());
            format!("lun{} {so} ({mode})", m.tpg_lun)
        }
        None => "BROKEN LUN LINK".into(),
    }
}

/// Storage objects served by a gateway of several (an RBD image with
/// `alua_group`) get a `gateway` child whose summary is that gateway's
/// live state: `state_of` the object's saved path (`/backstores/user/x`).
pub fn gateway_view(cfg: &SaveConfig, root: &mut Node, state_of: &dyn Fn(&str) -> Option<String>) {
    let Some(bs) = root.children.iter_mut().find(|n| n.name == "backstores") else {
        return;
    };
    for on in bs.children.iter_mut().flat_map(|p| p.children.iter_mut()) {
        let Some(state) = crate::locate::object_ref(cfg, &on.path).and_then(|p| state_of(&p))
        else {
            continue;
        };
        let gw = Node::new(&on.path, "gateway", state);
        on.children.push(gw);
    }
}

/// targetcli's TPG summary: `gen-acls, no-auth`, `no-gen-acls, auth per-acl`, ...
/// A vhost target as targetcli shows it: TPGs hold only `luns`; the TPG
/// line names the nexus, the socket and whether a guest is attached.
fn vhost_view(t: &Target, tn: &mut Node, guest: Option<String>) {
    let socket = config::vhost::socket_of(t);
    for gn in tn.children.iter_mut() {
        let tag = gn.name.trim_start_matches("tpg").parse().unwrap_or(1);
        gn.children.retain(|c| c.name == "luns");
        let attached = match &guest {
            Some(g) => format!("guest attached ({g})"),
            None => "no guest".to_string(),
        };
        gn.summary = format!(
            "nexus {}, socket {socket}, {attached}",
            config::vhost::nexus_of(&t.wwn, tag)
        );
    }
}

/// A loopback target as targetcli shows it: TPGs hold only `luns`; the
/// TPG line names the nexus, each LUN line its block device.
fn loopback_view(t: &Target, tn: &mut Node, disk_of: &dyn Fn(&str, u64) -> Option<String>) {
    let (queues, depth) = config::loopback::queues_of(t);
    for gn in tn.children.iter_mut() {
        let tag = gn.name.trim_start_matches("tpg").parse().unwrap_or(1);
        gn.children.retain(|c| c.name == "luns");
        let nexus = config::loopback::nexus_of(&t.wwn, tag);
        gn.summary = if config::loopback::scsi_mode(t) {
            format!("nexus {nexus}, mode scsi (local iSCSI initiator)")
        } else {
            format!("nexus {nexus}, ublk queues {queues}x{depth}")
        };
        for luns in gn.children.iter_mut() {
            for ln in luns.children.iter_mut() {
                let Some(i) = ln.name.strip_prefix("lun").and_then(|i| i.parse().ok()) else {
                    continue;
                };
                let dev = disk_of(&t.wwn, i).unwrap_or_else(|| "no device".into());
                ln.summary = format!("{} ({dev})", ln.summary);
            }
        }
    }
}

pub fn tpg_summary(tpg: &Tpg) -> String {
    if !tpg.enabled() {
        return "disabled".into();
    }
    // What the daemon serves (config's typed reading, defaults included).
    let a = config::TpgAttributes::parse(&tpg.attributes, !tpg.node_acls.is_empty())
        .unwrap_or_default();
    let auth = a.authentication == Some(true);
    let mut msg = vec![if a.generate_node_acls {
        "gen-acls"
    } else {
        "no-gen-acls"
    }];
    if !auth {
        msg.push("no-auth");
    } else if !a.generate_node_acls {
        msg.push("auth per-acl");
    } else {
        msg.push("tpg-auth");
        msg.push(if tpg.extra.contains_key("chap_mutual_userid") {
            "mutual auth"
        } else {
            "1-way auth"
        });
    }
    msg.join(", ")
}

fn object_summary(
    cfg: &SaveConfig,
    so: &StorageObject,
    size_of: &dyn Fn(&str) -> Option<u64>,
) -> String {
    let path = so.path();
    let status = if cfg
        .targets
        .iter()
        .flat_map(|t| &t.tpgs)
        .flat_map(|g| &g.luns)
        .any(|l| l.storage_object == path)
    {
        "activated"
    } else {
        "deactivated"
    };
    let size = bytes_to_human(so.size.or_else(|| size_of(&path)).unwrap_or(0));
    let dev = so.dev.as_deref().unwrap_or("");
    let wb = if so.write_back == Some(true) {
        "write-back"
    } else {
        "write-thru"
    };
    match so.plugin.as_str() {
        "ramdisk" => {
            let nullio = if so.nullio == Some(true) {
                "nullio "
            } else {
                ""
            };
            format!("{nullio}({size}) {status}")
        }
        "block" => {
            let ro = if so.readonly == Some(true) { "ro " } else { "" };
            format!("{dev} ({size}) {ro}{wb} {status}")
        }
        "user" => {
            let cfg = so.user_config().map(|(_, c)| c).unwrap_or("(no config)");
            format!("{cfg} ({size}) {status}")
        }
        _ => format!("{dev} ({size}) {wb} {status}"),
    }
}

pub fn find_object<'a>(cfg: &'a SaveConfig, path: &str) -> Option<&'a StorageObject> {
    cfg.storage_objects.iter().find(|so| so.path() == path)
}

/// `IP:PORT` as targetcli names portals (IPv6 in brackets).
pub fn portal_name(p: &Portal) -> String {
    if p.ip_address.contains(':') && !p.ip_address.starts_with('[') {
        format!("[{}]:{}", p.ip_address, p.port)
    } else {
        format!("{}:{}", p.ip_address, p.port)
    }
}

/// targetcli's sizes: `512 bytes`, `64.0MiB`, `8.0GiB`.
pub fn bytes_to_human(size: u64) -> String {
    if size < 1024 {
        return format!("{size} bytes");
    }
    let mut s = size as f64 / 1024.0;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        if s < 1024.0 {
            return format!("{s:.1}{unit}");
        }
        s /= 1024.0;
    }
    format!("{s:.1}PiB")
}

/// configshell sorts children by name, trailing numbers numerically
/// (`lun2` before `lun10`).
fn sort(nodes: &mut [Node]) {
    fn key(s: &str) -> (&str, u64) {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, num) = s.split_at(s.len() - digits);
        (head, num.parse().unwrap_or(0))
    }
    nodes.sort_by(|a, b| key(&a.name).cmp(&key(&b.name)));
}

/// Short names of plugin directories: `/backstores/qcow2` is
/// `/backstores/user:qcow` (what people type after `qemu-img create -f
/// qcow2`); objects are shown and saved under the full name.
pub const PLUGIN_ALIASES: [(&str, &str); 1] = [("qcow2", "user:qcow")];

/// Resolve `input` (absolute, or relative to `cwd`; `.` and `..` allowed)
/// to a normalised absolute path without a trailing slash; a plugin's
/// short name ([`PLUGIN_ALIASES`]) becomes its full one.
pub fn normalize(cwd: &str, input: &str) -> String {
    let joined = if input.starts_with('/') {
        input.to_string()
    } else {
        format!("{cwd}/{input}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if let ["backstores", short, ..] = parts.as_slice() {
        if let Some((_, full)) = PLUGIN_ALIASES.iter().find(|(a, _)| a == short) {
            parts[1] = full;
        }
    }
    format!("/{}", parts.join("/"))
}

/// configshell's layout: `o- name .... [summary]` filling `width` columns,
/// children indented by two, `|` while a sibling follows below.
pub fn render(node: &Node, depth: Option<usize>, width: usize) -> String {
    let mut out = String::new();
    let mut margin = Vec::new();
    render_into(&mut out, node, &mut margin, depth, width);
    out.pop();
    out
}

fn render_into(
    out: &mut String,
    node: &Node,
    margin: &mut Vec<bool>,
    depth: Option<usize>,
    width: usize,
) {
    // configshell's margin: nothing for the node rendered first, then two
    // columns per ancestor level, a pipe where that ancestor has a sibling below.
    let mut line = String::new();
    if let Some((_, ancestors)) = margin.split_last() {
        line.push_str("  ");
        for pipe in ancestors {
            line.push_str(if *pipe { "| " } else { "  " });
        }
    }
    let summary = if node.summary.is_empty() {
        "..."
    } else {
        &node.summary
    };
    let head = format!("{line}o- {}", node.name);
    let used = head.chars().count() + summary.chars().count() + 4;
    let pad = width.saturating_sub(used);
    out.push_str(&format!("{head} {} [{summary}]\n", ".".repeat(pad)));
    if depth == Some(0) {
        return;
    }
    let n = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        margin.push(i + 1 < n);
        render_into(out, child, margin, depth.map(|d| d - 1), width);
        margin.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> SaveConfig {
        serde_json::from_value(json!({
            "storage_objects": [
                {"plugin": "fileio", "name": "mydisk1", "dev": "/var/lib/d.img",
                 "size": 8589934592u64, "write_back": true},
                {"plugin": "ramdisk", "name": "r0", "size": 1048576}
            ],
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:t1", "tpgs": [{
                "tag": 1,
                "attributes": {"authentication": 0, "generate_node_acls": 1},
                "luns": [{"index": 0, "storage_object": "/backstores/fileio/mydisk1"}],
                "portals": [{"ip_address": "127.0.0.1", "port": 3260}],
                "node_acls": [{"node_wwn": "iqn.1994-05.com.redhat:c", "mapped_luns": [
                    {"index": 0, "tpg_lun": 0, "write_protect": true}]}]
            }]}]
        }))
        .unwrap()
    }

    #[test]
    fn renders_targetcli_shape() {
        let tree = build(&sample(), &|_| None);
        let text = render(&tree, None, 80);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() == 80), "{text}");
        assert!(lines[0].starts_with("o- / ....") && lines[0].ends_with(" [...]"));
        assert!(lines[1].starts_with("  o- backstores ...."));
        assert!(
            lines[2].starts_with("  | o- block ....") && lines[2].ends_with("[Storage Objects: 0]")
        );
        assert!(
            lines[4].starts_with("  | | o- mydisk1 ...")
                && lines[4].ends_with("[/var/lib/d.img (8.0GiB) write-back activated]"),
            "{text}"
        );
        assert!(
            text.contains("  | |   o- alua ....")
                && text.contains("[ALUA state: Active/optimized]")
        );
        assert!(text.contains("[(1.0MiB) deactivated]"));
        assert!(text.contains("  o- iscsi ") && text.contains("[Targets: 1]"));
        assert!(text.contains("  | o- iqn.2026-11.org.example:t1 ") && text.contains("[TPGs: 1]"));
        assert!(text.contains("  |   o- tpg1 ") && text.contains("[gen-acls, no-auth]"));
        assert!(text.contains("  |     o- acls ") && text.contains("[ACLs: 1]"));
        assert!(text.contains("[lun0 fileio/mydisk1 (ro)]"));
        assert!(
            text.contains("  |     | o- lun0 ")
                && text.contains("[fileio/mydisk1 (/var/lib/d.img) (default_tg_pt_gp)]")
        );
        assert!(text.contains("  |       o- 127.0.0.1:3260 ") && text.contains("[OK]"));
        assert!(
            lines[lines.len() - 2].starts_with("  o- loopback ")
                && lines[lines.len() - 2].ends_with("[Targets: 0]")
        );
        assert!(lines[lines.len() - 1].starts_with("  o- vhost "));
    }

    #[test]
    fn gateway_state_under_its_object() {
        let mut cfg = sample();
        let mut so = cfg.storage_objects[0].clone();
        so.plugin = "user".into();
        so.name = "gw0".into();
        so.extra
            .insert("config".into(), json!("rbd/rbd/img;alua_group=1"));
        cfg.storage_objects.push(so);
        let mut root = build(&cfg, &|_| None);
        gateway_view(&cfg, &mut root, &|p| {
            (p == "/backstores/user/gw0").then(|| "gateway group 1, lock owner yes".to_string())
        });
        let gw = root
            .find("/backstores/user:rbd/gw0/gateway")
            .expect("gateway node");
        assert_eq!(gw.summary, "gateway group 1, lock owner yes");
        let others = root.find("/backstores").unwrap().children.iter();
        let n = others
            .flat_map(|p| &p.children)
            .filter(|o| o.children.iter().any(|c| c.name == "gateway"))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn depth_and_find() {
        let tree = build(&sample(), &|_| None);
        let text = render(&tree, Some(1), 80);
        assert_eq!(text.lines().count(), 5, "{text}");
        let tpg = tree.find("/iscsi/iqn.2026-11.org.example:t1/tpg1").unwrap();
        assert_eq!(tpg.children.len(), 3);
        let text = render(tpg, None, 60);
        assert!(text.starts_with("o- tpg1 "), "{text}");
        assert!(tree.find("/iscsi/nope").is_none());
        assert_eq!(tree.pruned(Some(0)).children.len(), 0);
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("/iscsi", "iqn.x/tpg1"), "/iscsi/iqn.x/tpg1");
        assert_eq!(normalize("/iscsi/a/tpg1", ".."), "/iscsi/a");
        assert_eq!(normalize("/iscsi", "/backstores/"), "/backstores");
        assert_eq!(normalize("/", "../.."), "/");
        // The short name of user:qcow, wherever the path starts.
        assert_eq!(normalize("/", "/backstores/qcow2"), "/backstores/user:qcow");
        assert_eq!(
            normalize("/backstores", "qcow2/q1"),
            "/backstores/user:qcow/q1"
        );
        assert_eq!(normalize("/", "/iscsi/qcow2"), "/iscsi/qcow2");
    }

    #[test]
    fn human_sizes_and_sorting() {
        assert_eq!(bytes_to_human(512), "512 bytes");
        assert_eq!(bytes_to_human(64 << 20), "64.0MiB");
        assert_eq!(bytes_to_human(8 << 30), "8.0GiB");
        let mut v: Vec<Node> = ["lun10", "lun2", "acls"]
            .iter()
            .map(|n| Node::new("/", n, ""))
            .collect();
        sort(&mut v);
        let names: Vec<&str> = v.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["acls", "lun2", "lun10"]);
    }
}
