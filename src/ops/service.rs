//! `claude-ingest service install|uninstall|status`: run `ingest` as the
//! user's service, restarted when it fails: a systemd user unit on Linux, a
//! launchd agent on macOS. The unit runs the installed binary (this one) with
//! the options given at install time; no secret is written into the unit or
//! onto a command line (`ps`): a password given at install time goes into a
//! 0600 file passed as `--clickhouse-password-file`, and systemd also reads
//! an optional 0600 environment file for anything else.

use crate::builtin;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const UNIT_NAME: &str = "claude-ingest.service";
pub const AGENT_LABEL: &str = "com.github.claude-ingest";

#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
    /// Service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum, global = true)]
    pub kind: Option<ServiceKind>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ServiceAction {
    /// Write the unit / agent for `ingest` with the global options given here, then enable and start it.
    Install {
        /// Only write the files; do not enable or start the service.
        #[arg(long)]
        no_start: bool,
        /// Extra `ingest` options (after `--`), e.g. `-- --listen 127.0.0.1:9000`.
        #[arg(last = true)]
        ingest_args: Vec<String>,
    },
    /// Stop and disable the service and remove its unit / agent file.
    Uninstall,
    /// Show the service manager's view of the service.
    Status,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Systemd,
    Launchd,
}

impl ServiceKind {
    fn native() -> ServiceKind {
        if cfg!(target_os = "macos") {
            ServiceKind::Launchd
        } else {
            ServiceKind::Systemd
        }
    }

    /// Where the unit / agent file goes.
    pub fn file(self) -> PathBuf {
        match self {
            ServiceKind::Systemd => builtin::xdg_config_home()
                .join("systemd/user")
                .join(UNIT_NAME),
            ServiceKind::Launchd => builtin::home()
                .join("Library/LaunchAgents")
                .join(format!("{AGENT_LABEL}.plist")),
        }
    }
}

/// What the service runs: the binary and its arguments (never a secret).
pub struct ServicePlan {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
}

/// The environment file systemd reads (0600; may hold secrets).
pub fn env_file() -> PathBuf {
    builtin::config_home().join("service.env")
}

/// Where a password given at install time is kept (0600).
pub fn password_file() -> PathBuf {
    builtin::config_home().join("clickhouse-password")
}

/// `global` are the non-secret global options to run with; `password`, when
/// set, is written to [`password_file`] and passed by path.
pub fn run(args: &ServiceArgs, global: Vec<OsString>, password: Option<&str>) -> Result<()> {
    let kind = args.kind.unwrap_or_else(ServiceKind::native);
    match &args.action {
        ServiceAction::Install {
            no_start,
            ingest_args,
        } => {
            let mut plan = ServicePlan {
                binary: installed_binary()?,
                args: global,
            };
            if let Some(pw) = password {
                let file = password_file();
                write_private(&file, &format!("{pw}\n"))?;
                println!(
                    "wrote {} (0600): the password, passed by path",
                    file.display()
                );
                plan.args.push("--clickhouse-password-file".into());
                plan.args.push(file.into());
            }
            plan.args.push("ingest".into());
            plan.args.extend(ingest_args.iter().map(OsString::from));
            install(kind, &plan, !no_start)
        }
        ServiceAction::Uninstall => uninstall(kind),
        ServiceAction::Status => status(kind),
    }
}

/// This binary, resolved; a build directory works but is worth a warning.
fn installed_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let s = exe.to_string_lossy();
    if s.contains("/target/debug/") || s.contains("/target/release/") {
        eprintln!(
            "warning: the service will run {s}, a build directory; install the binary first \
             (e.g. `cargo install --path .` or copy it to ~/.local/bin) and run its `service install`"
        );
    }
    Ok(exe)
}

fn install(kind: ServiceKind, plan: &ServicePlan, start: bool) -> Result<()> {
    let file = kind.file();
    let text = match kind {
        ServiceKind::Systemd => {
            let env = env_file();
            if !env.exists() {
                write_private(&env, ENV_TEMPLATE)?;
                println!(
                    "wrote {} (0600): environment for the service",
                    env.display()
                );
            }
            systemd_unit(plan, &env)
        }
        ServiceKind::Launchd => launchd_plist(plan, &builtin::home()),
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    println!("wrote {}", file.display());
    let steps: Vec<Vec<String>> = match kind {
        ServiceKind::Systemd => vec![
            argv(&["systemctl", "--user", "daemon-reload"]),
            argv(&["systemctl", "--user", "enable", "--now", UNIT_NAME]),
        ],
        ServiceKind::Launchd => vec![argv(&[
            "launchctl",
            "bootstrap",
            format!("gui/{}", uid()).as_str(),
            file.to_string_lossy().as_ref(),
        ])],
    };
    if start {
        run_steps(&steps);
    } else {
        println!("not started (--no-start); to start it:");
        for s in &steps {
            println!("  {}", s.join(" "));
        }
    }
    Ok(())
}

fn uninstall(kind: ServiceKind) -> Result<()> {
    let file = kind.file();
    match kind {
        ServiceKind::Systemd => run_steps(&[argv(&[
            "systemctl",
            "--user",
            "disable",
            "--now",
            UNIT_NAME,
        ])]),
        ServiceKind::Launchd => run_steps(&[argv(&[
            "launchctl",
            "bootout",
            format!("gui/{}/{AGENT_LABEL}", uid()).as_str(),
        ])]),
    }
    match std::fs::remove_file(&file) {
        Ok(()) => println!("removed {}", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not installed", file.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
    }
    if kind == ServiceKind::Systemd {
        run_steps(&[argv(&["systemctl", "--user", "daemon-reload"])]);
    }
    println!(
        "kept {} and {} (delete them yourself if unwanted)",
        env_file().display(),
        password_file().display()
    );
    Ok(())
}

fn status(kind: ServiceKind) -> Result<()> {
    let file = kind.file();
    if !file.exists() {
        bail!(
            "not installed ({} does not exist): run `claude-ingest service install`",
            file.display()
        );
    }
    println!("installed: {}", file.display());
    match kind {
        ServiceKind::Systemd => run_steps(&[argv(&[
            "systemctl",
            "--user",
            "status",
            "--no-pager",
            UNIT_NAME,
        ])]),
        ServiceKind::Launchd => run_steps(&[argv(&[
            "launchctl",
            "print",
            format!("gui/{}/{AGENT_LABEL}", uid()).as_str(),
        ])]),
    }
    Ok(())
}

const ENV_TEMPLATE: &str = "\
# Environment of the claude-ingest service (KEY=value lines). This file is
# 0600: it may hold secrets, which never appear in the unit or in `ps`.
# RUST_LOG=info
# CLICKHOUSE_URL=https://clickhouse.example.com:8443
# CLICKHOUSE_USER=claude_ingest
# CLICKHOUSE_PASSWORD_FILE=/home/me/.config/claude-ingest/clickhouse-password
";

/// The systemd user unit: restarts on failure, drains on stop, private files.
pub fn systemd_unit(plan: &ServicePlan, env_file: &Path) -> String {
    let mut exec = vec![systemd_quote(&plan.binary.to_string_lossy())];
    exec.extend(
        plan.args
            .iter()
            .map(|a| systemd_quote(&a.to_string_lossy())),
    );
    format!(
        "# Written by `claude-ingest service install`; `claude-ingest service uninstall` removes it.\n\
         [Unit]\n\
         Description=claude-ingest: Claude Code session logs into ClickHouse\n\
         StartLimitIntervalSec=300\n\
         StartLimitBurst=10\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         WorkingDirectory=%h\n\
         EnvironmentFile=-{}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         # A stop drains what was read into ClickHouse first.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=60s\n\
         UMask=0077\n\
         NoNewPrivileges=yes\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec.join(" "),
        systemd_escape(&env_file.to_string_lossy()),
    )
}

/// One ExecStart word: double-quoted, C escapes, and `%`/`$` doubled so
/// systemd neither expands specifiers nor variables in it.
fn systemd_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in systemd_escape(s).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn systemd_escape(s: &str) -> String {
    s.replace('%', "%%").replace('$', "$$")
}

/// The launchd agent: started at login, restarted when it exits with a failure.
pub fn launchd_plist(plan: &ServicePlan, home: &Path) -> String {
    let mut args = format!(
        "    <string>{}</string>\n",
        xml(&plan.binary.to_string_lossy())
    );
    for a in &plan.args {
        args.push_str(&format!(
            "    <string>{}</string>\n",
            xml(&a.to_string_lossy())
        ));
    }
    let log = home.join("Library/Logs/claude-ingest.log");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `claude-ingest service install`; `claude-ingest service uninstall` removes it. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{AGENT_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
{args}  </array>
  <key>WorkingDirectory</key>
  <string>{home}</string>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>ExitTimeOut</key>
  <integer>60</integer>
  <key>ProcessType</key>
  <string>Background</string>
  <key>Umask</key>
  <integer>63</integer>
  <key>StandardOutPath</key>
  <string>{log}</string>
  <key>StandardErrorPath</key>
  <string>{log}</string>
</dict>
</plist>
"#,
        home = xml(&home.to_string_lossy()),
        log = xml(&log.to_string_lossy()),
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Run the service manager's commands; a failure is reported with the
/// command to run by hand (e.g. no user session bus in a container or over ssh).
fn run_steps(steps: &[Vec<String>]) {
    for s in steps {
        let ok = Command::new(&s[0])
            .args(&s[1..])
            .status()
            .map(|st| st.success());
        match ok {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                eprintln!(
                    "note: `{}` did not succeed; run it yourself once the service manager is available \
                     (systemd: a user session, or `loginctl enable-linger $USER` to run without one)",
                    s.join(" ")
                );
                return;
            }
        }
    }
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Create or replace `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ServicePlan {
        ServicePlan {
            binary: PathBuf::from("/opt/claude ingest/bin/claude-ingest"),
            args: vec!["--root".into(), "/data/100%$HOME".into(), "ingest".into()],
        }
    }

    #[test]
    fn the_unit_restarts_on_failure_and_quotes_its_arguments() {
        let unit = systemd_unit(
            &plan(),
            Path::new("/home/me/.config/claude-ingest/service.env"),
        );
        assert!(unit.contains("Restart=on-failure\n"), "{unit}");
        assert!(unit.contains("WantedBy=default.target\n"), "{unit}");
        assert!(unit.contains(
            "ExecStart=\"/opt/claude ingest/bin/claude-ingest\" \"--root\" \"/data/100%%$$HOME\" \"ingest\"\n"
        ), "{unit}");
        assert!(
            unit.contains("EnvironmentFile=-/home/me/.config/claude-ingest/service.env\n"),
            "{unit}"
        );
    }

    #[test]
    fn the_plist_keeps_a_failed_agent_alive_and_escapes_xml() {
        let mut p = plan();
        p.args.push("--listen=a&b".into());
        let plist = launchd_plist(&p, Path::new("/Users/me"));
        assert!(
            plist.contains("<key>SuccessfulExit</key>\n    <false/>"),
            "{plist}"
        );
        assert!(
            plist.contains("<string>/opt/claude ingest/bin/claude-ingest</string>"),
            "{plist}"
        );
        assert!(
            plist.contains("<string>--listen=a&amp;b</string>"),
            "{plist}"
        );
        assert!(
            plist.contains("<string>/Users/me/Library/Logs/claude-ingest.log</string>"),
            "{plist}"
        );
    }
}
