//! `rtarget completions SHELL` and `rtarget man`: generated from the clap
//! definition of the daemon side ([`crate::cli`]), so they never disagree
//! with it; the man page adds the management commands (the client's own
//! parser, [`crate::client::HELP`]), the files and the signals. The .deb
//! ships both (scripts/build-deb.sh).

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "rtarget", out);
    if shell == clap_complete::Shell::Bash {
        bash_management(out)?;
    }
    Ok(())
}

/// clap knows the daemon's subcommands only; in bash the management
/// commands complete too: the first word may be a verb or a top-level
/// path, the word after a path a verb (the tree itself needs the daemon:
/// the interactive shell completes it).
fn bash_management(out: &mut dyn Write) -> Result<()> {
    let verbs = crate::client::VERBS.join(" ");
    let mut paths = vec!["/backstores".to_string(), "/iscsi".to_string()];
    paths.extend(
        manage::tree::plugins()
            .iter()
            .map(|p| format!("/backstores/{p}")),
    );
    let paths = paths.join(" ");
    write!(
        out,
        r#"
_rtarget_management() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}}
    case ${{COMP_WORDS[1]}} in
        serve|check|import-tgt|completions|man|help|-*)
            ((COMP_CWORD > 1)) && {{ _rtarget "$@"; return; }} ;;
    esac
    if ((COMP_CWORD == 1)); then
        _rtarget "$@"
        COMPREPLY+=($(compgen -W "{verbs} {paths}" -- "$cur"))
    elif ((COMP_CWORD == 2)) && [[ ${{COMP_WORDS[1]}} == /* ]]; then
        COMPREPLY=($(compgen -W "{verbs}" -- "$cur"))
    fi
}}
complete -F _rtarget_management -o bashdefault -o default rtarget
"#
    )?;
    Ok(())
}

pub fn man(out: &mut dyn Write) -> Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    // Each subcommand's options (serve's are the ones people look up).
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().count() > 0)
    {
        writeln!(
            out,
            ".SH \"{} {}\"",
            cmd.get_name().to_uppercase(),
            sub.get_name().to_uppercase()
        )?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let name = match (arg.get_long(), arg.get_value_names()) {
                (Some(l), Some(v)) => format!("\\-\\-{} {}", roff_text(l), v.join(" ")),
                (Some(l), None) => format!("\\-\\-{}", roff_text(l)),
                (None, Some(v)) => v.join(" "),
                (None, None) => arg.get_id().to_string(),
            };
            writeln!(out, ".TP\n\\fB{name}\\fR")?;
            if let Some(h) = arg.get_help() {
                writeln!(out, "{}", roff_text(&h.to_string()))?;
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                writeln!(out, ".br\nDefault: {}", roff_text(&defaults.join(", ")))?;
            }
        }
    }
    writeln!(out, ".SH MANAGEMENT")?;
    writeln!(out, ".nf")?;
    for line in crate::client::HELP.lines() {
        writeln!(out, "{}", roff_text(line))?;
    }
    writeln!(out, ".fi")?;
    writeln!(
        out,
        ".SH SIGNALS\n.TP\nSIGHUP\nRe\\-read the config file (restoreconfig): it is validated and every object opened first, so a bad file changes nothing.\n.TP\nSIGTERM, SIGINT\nLog sessions out, flush every backstore, exit; a second signal exits at once."
    )?;
    writeln!(
        out,
        ".SH FILES\n.TP\n/etc/rtarget/saveconfig.json\nThe configuration (rtslib\\-fb schema), saved after every change.\n.TP\n/etc/rtarget/rtarget\\-prefs.json\nGlobal preferences (set global).\n.TP\n/run/rtarget/rtarget.sock\nThe management API (JSON lines, mode 0600).\n.TP\n/var/lib/rtarget\nState: persistent reservations, the demo image."
    )?;
    writeln!(
        out,
        ".SH ENVIRONMENT\n.TP\nRUST_LOG\nLog filter (default info).\n.TP\nNOTIFY_SOCKET\nsystemd readiness: READY=1 once the portals listen, RELOADING=1 on SIGHUP."
    )?;
    man.render_version_section(out)?;
    Ok(())
}

/// A text line safe in roff: backslashes escaped, `-` kept literal, and a
/// leading `.` or `'` not taken as a request.
fn roff_text(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_has_every_section() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        for want in [
            ".TH rtarget 1",
            ".SH NAME",
            ".SH \"RTARGET SERVE\"",
            "\\fB\\-\\-default\\-portal ADDR:PORT\\fR",
            ".SH MANAGEMENT",
            "/backstores/fileio create disk1",
            ".SH SIGNALS",
            ".SH FILES",
        ] {
            assert!(page.contains(want), "{want:?} missing:\n{page}");
        }
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out).unwrap();
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("complete -F _rtarget"), "{script}");
        assert!(script.contains("--default-portal"));
    }

    /// The bash script loads and completes both sides: `rtarget se` to
    /// serve/sessions/set, `rtarget /backstores/fileio cr` to create.
    #[test]
    fn bash_completes_daemon_and_management_words() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtarget.bash");
        std::fs::write(&path, out).unwrap();
        let complete = |words: &str| {
            let script = format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _rtarget_management rtarget; printf '%s\\n' \"${{COMPREPLY[@]}}\" | sort -u",
                path.display()
            );
            let o = std::process::Command::new("bash")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        };
        let first = complete("rtarget se");
        for w in ["serve", "sessions", "set"] {
            assert!(first.lines().any(|l| l == w), "{w} not in {first:?}");
        }
        let paths = complete("rtarget /backstores/f");
        assert!(
            paths.lines().any(|l| l == "/backstores/fileio"),
            "{paths:?}"
        );
        let verbs = complete("rtarget /backstores/fileio cr");
        assert_eq!(verbs.trim(), "create");
        let serve = complete("rtarget serve --me");
        assert!(serve.lines().any(|l| l == "--metrics"), "{serve:?}");
    }
}
