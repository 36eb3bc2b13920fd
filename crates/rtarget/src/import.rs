//! `rtarget import-tgt [TARGETS_CONF] [--output FILE]`: tgt's configuration
//! as a saveconfig.json ([`manage::import_tgt`] does the conversion; this
//! reads the files, follows `include`s, checks the result and writes it).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::ImportTgtArgs;
use crate::ops::Ctx;

pub fn run(args: &ImportTgtArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut notes = Vec::new();
    let targets = manage::import_tgt::parse(&text, &include, &mut notes)
        .with_context(|| format!("{}", args.file.display()))?;
    let ctx = Ctx {
        default_portal: args.portal,
        add_default_portal: true,
        auto_add_mapped_luns: false,
        new_uuid: Box::new(crate::build::random_uuid),
        stat: Box::new(crate::api::stat),
    };
    let mut out = manage::import_tgt::import(&targets, &ctx)?;
    notes.append(&mut out.notes);
    if let Err(errors) = config::validate(&out.cfg) {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        bail!("the imported configuration is invalid: {}", list.join("; "));
    }
    for n in &notes {
        eprintln!("rtarget: note: {n}");
    }
    let summary = format!(
        "{} target(s), {} storage object(s) imported from {}{}",
        out.cfg.targets.len(),
        out.cfg.storage_objects.len(),
        args.file.display(),
        if notes.is_empty() {
            String::new()
        } else {
            format!("; {} item(s) not carried over (listed above)", notes.len())
        }
    );
    match &args.output {
        None => print!("{}", config::to_json(&out.cfg)),
        Some(p) => {
            if p.exists() && !args.force {
                bail!("{} exists; not replacing it (use --force)", p.display());
            }
            config::save(&out.cfg, p)?;
        }
    }
    eprintln!("rtarget: {summary}");
    Ok(())
}

/// tgt's `include PATH`: a file, or a glob in its last component
/// (`/etc/tgt/conf.d/*.conf`), in name order.
fn include(pattern: &str) -> Result<Vec<(String, String)>> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let files: Vec<std::path::PathBuf> = if name.contains('*') {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut v: Vec<_> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| glob_match(&name, &n.to_string_lossy()))
                })
                .collect(),
            // tgt-admin ignores a missing conf.d.
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the included {}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

/// `*` matches any run of characters; everything else itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("t*-*.conf", "t1-x.conf"));
        assert!(glob_match("exact", "exact"));
    }
}
