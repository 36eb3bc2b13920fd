//! Printing the daemon's answers as text: each [`Show`] decodes its
//! typed answer (the same `proto` types the daemon encodes) and prints it
//! the way targetcli would.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::Show;
use crate::proto::{
    AclKind, Answer, Change, Info, Listing, SessionDetail, SessionSummary, Sessions, Values,
};

/// Print a response; returns whether it was a success.
pub fn print(resp: &Value, show: Show, as_json: bool) -> bool {
    if as_json {
        println!("{resp}");
        return resp["ok"] == Value::Bool(true);
    }
    match show {
        Show::Ls => decoded(resp, |l: Listing| println!("{}", l.text)),
        Show::Status => decoded(resp, |l: Listing| {
            println!("Status for {}: {}", l.tree.path, l.tree.summary)
        }),
        Show::Info => decoded(resp, |i: Info| match i.info {
            Some(m) => {
                for (k, v) in m {
                    match v {
                        Value::Object(_) | Value::Array(_) => println!("{k}: {v}"),
                        v => println!("{k}: {}", config::value_string(&v)),
                    }
                }
            }
            None => println!("(no information at this path)"),
        }),
        // `saveconfig`'s answer has no warnings: they default to none.
        Show::Message => decoded(resp, |c: Change| {
            println!("{}", c.message);
            for w in c.warnings {
                eprintln!("rtarget: warning: {w}");
            }
        }),
        Show::Values => decoded(resp, |v: Values| {
            for (k, v) in v.values {
                match v {
                    Value::Null => println!("{k}=(default)"),
                    Value::Bool(b) => println!("{k}={b}"),
                    v => println!("{k}={}", config::value_string(&v)),
                }
            }
        }),
        Show::SessionsDetail => decoded(resp, |s: Sessions<SessionDetail>| {
            if s.guests.is_empty() || !s.sessions.is_empty() {
                print_sessions_detail(&s.sessions);
            }
            print_guests(&s.guests);
            print_gateways(&s.gateways);
        }),
        Show::Sessions => decoded(resp, |s: Sessions<SessionSummary>| {
            if s.sessions.is_empty() && s.guests.is_empty() {
                println!("(no open sessions)");
            }
            for s in s.sessions {
                // Sessions of several connections (MC/S) say which.
                let conns = match s.cids.len() {
                    0 | 1 => String::new(),
                    n => {
                        let cids: Vec<String> = s.cids.iter().map(u16::to_string).collect();
                        format!(" ({n} connections, cids {})", cids.join(","))
                    }
                };
                println!(
                    "{} isid {} tsih {} -> {} tpg{} from {}{conns}",
                    s.initiator, s.isid, s.tsih, s.target, s.tpg, s.peer
                );
            }
            print_guests(&s.guests);
            print_gateways(&s.gateways);
        }),
    }
}

/// Decode an answer as `T` and show it with `show`; an error answer (or
/// one that is not a `T`) is printed to stderr. Returns whether it was a
/// success.
fn decoded<T: DeserializeOwned>(resp: &Value, show: impl FnOnce(T)) -> bool {
    match Answer::<T>::deserialize(resp) {
        Ok(Answer::Ok(body)) => {
            show(body);
            true
        }
        Ok(Answer::Err(e)) => {
            eprintln!("rtarget: error: {e}");
            false
        }
        Err(e) => {
            eprintln!("rtarget: error: bad response from the daemon: {e}");
            false
        }
    }
}

/// Gateways of shared media, one line each.
fn print_gateways(gateways: &[crate::proto::GatewayState]) {
    for g in gateways {
        println!("{} ({}): {}", g.storage_object, g.medium, g.state);
    }
}

/// vhost guests, one line each.
fn print_guests(guests: &[crate::proto::VhostGuest]) {
    for g in guests {
        println!(
            "{} (vhost guest) -> {} tpg{} on {}",
            g.nexus, g.target, g.tpg, g.socket
        );
    }
}

/// `sessions detail` in targetcli's layout, plus parameters and counters.
fn print_sessions_detail(list: &[SessionDetail]) {
    if list.is_empty() {
        println!("(no open sessions)");
    }
    for d in list {
        let s = &d.session;
        println!(
            "alias: {}\tsid: {} type: Normal session-state: LOGGED_IN",
            s.initiator, s.tsih
        );
        let auth = if d.authenticated {
            "AUTHENTICATED"
        } else {
            "NOT AUTHENTICATED"
        };
        let acl = match d.acl {
            AclKind::Explicit => "explicit",
            AclKind::Generated => "generated",
        };
        println!("  name: {} ({auth})", s.initiator);
        println!(
            "  target: {} tpg{}  isid: 0x{}  tsih: {}  acl: {acl}",
            s.target, s.tpg, s.isid, s.tsih
        );
        for l in &d.luns {
            println!(
                "    mapped-lun: {} backstore: {} mode: {}  commands: {} read: {} B write: {} B",
                l.lun,
                l.storage_object,
                if l.write_protect { "r" } else { "rw" },
                l.commands,
                l.read_bytes,
                l.write_bytes
            );
        }
        for c in &d.connections {
            println!(
                "  address: {} (TCP)  local: {}  cid: {} connection-state: LOGGED_IN",
                c.peer, c.local, c.cid
            );
        }
        if !d.parameters.is_empty() {
            let kv: Vec<String> = d
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("  parameters: {}", kv.join(" "));
        }
    }
}
