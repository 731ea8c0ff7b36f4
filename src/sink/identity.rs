//! Who wrote a row, stamped by the sink on every row of every table.
//!
//! Several machines may write into one ClickHouse. Their logs share project
//! paths (`/home/me/app`), file names and byte offsets, so every key built
//! from those alone would collide across machines: one machine's message or
//! dead letter would replace another's, and one machine's dedup token could
//! swallow another's insert. Every table therefore has `host` and
//! `user_name` columns, part of every ReplacingMergeTree / AggregatingMergeTree
//! key, and every batch id (hence every insert dedup token) carries a tag of
//! the identity. Each machine's exactly-once argument (spool + tokens +
//! keys) then holds on its own slice of every table.
//!
//! The writer makes one call per row ([`RowStamp::apply`]) before encoding;
//! the same call applies the privacy settings (`privacy.rs`), so what is
//! spooled and inserted is already stamped and anonymised.

use super::privacy::Privacy;
use crate::row::{Columns, Row};
use anyhow::{bail, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The identity columns every table has (other modules filter by them).
pub const HOST_COLUMN: &str = "host";
pub const USER_COLUMN: &str = "user_name";

/// Columns the sink owns: a rule or plugin value for them is ignored.
pub fn is_identity_column(name: &str) -> bool {
    name == HOST_COLUMN || name == USER_COLUMN
}

/// The machine and the user rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub user: String,
}

impl Identity {
    /// From configured values (config, env or flags), each defaulting to the
    /// machine's host name and the OS user.
    pub fn resolve(host: Option<&str>, user: Option<&str>) -> Result<Identity> {
        let host = match host {
            Some(h) => h.to_string(),
            None => system_host_name(),
        };
        let user = match user {
            Some(u) => u.to_string(),
            None => system_user_name(),
        };
        let id = Identity { host, user };
        id.validate()?;
        Ok(id)
    }

    /// The machine's own identity (what an unconfigured engine uses).
    pub fn system() -> Identity {
        Identity {
            host: system_host_name(),
            user: system_user_name(),
        }
    }

    fn validate(&self) -> Result<()> {
        for (what, v) in [("identity.host", &self.host), ("identity.user", &self.user)] {
            if v.trim().is_empty() {
                bail!("{what} is empty (set it in the config, or leave it unset for the default)");
            }
            if v.len() > 255 || v.chars().any(char::is_control) {
                bail!("{what} `{v}` must be at most 255 characters without control characters");
            }
        }
        Ok(())
    }

    /// A short tag of the identity for batch ids: the dedup token of an
    /// insert is `<batch id>:<table>`, so two machines can never produce the
    /// same token (even with equal clocks and pids, e.g. containers).
    pub fn tag(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.host.as_bytes());
        h.update([0]);
        h.update(self.user.as_bytes());
        hex::encode(&h.finalize()[..6])
    }
}

fn system_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // (or truncates) within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.trim().is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

fn system_user_name() -> String {
    for var in ["USER", "LOGNAME", "USERNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v;
            }
        }
    }
    passwd_name().unwrap_or_else(|| "unknown-user".into())
}

/// The effective user's login name from the password database (services
/// started without `USER` in their environment).
fn passwd_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `out` is null or `&pwd`,
    // whose strings point into `buf`, which outlives their use below.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

/// What the writer applies to every row before encoding it: the identity
/// columns, then the privacy settings.
#[derive(Debug, Clone)]
pub struct RowStamp {
    pub identity: Identity,
    pub privacy: Privacy,
}

impl Default for RowStamp {
    fn default() -> Self {
        RowStamp {
            identity: Identity::system(),
            privacy: Privacy::default(),
        }
    }
}

impl RowStamp {
    pub fn new(identity: Identity, privacy: Privacy) -> RowStamp {
        RowStamp { identity, privacy }
    }

    /// Metrics-only and anonymisation, when configured (the identity columns
    /// themselves are encoded by the writer from [`Self::stored_identity`]).
    pub fn apply_privacy(&self, row: &mut Row) {
        if self.privacy.is_active() {
            self.privacy.apply(&row.table, &mut row.columns);
        }
    }

    /// The identity as stored (anonymised when `privacy.anonymize` lists
    /// `host` / `user_name`), for rows written outside the writer.
    pub fn stored_identity(&self) -> Identity {
        let mut c = Columns::new();
        c.insert(HOST_COLUMN, Value::from(self.identity.host.as_str()));
        c.insert(USER_COLUMN, Value::from(self.identity.user.as_str()));
        self.privacy.apply("", &mut c);
        let get = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Identity {
            host: get(HOST_COLUMN),
            user: get(USER_COLUMN),
        }
    }

    /// Appended to batch ids (see [`Identity::tag`]).
    pub fn batch_tag(&self) -> String {
        self.identity.tag()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_per_identity_and_are_stable() {
        let a = Identity::resolve(Some("a"), Some("u")).unwrap();
        let b = Identity::resolve(Some("b"), Some("u")).unwrap();
        // host "a\0u"-style ambiguity is excluded by the separator
        let c = Identity::resolve(Some("au"), Some("")).map(|i| i.tag());
        assert!(c.is_err(), "an empty user is refused");
        assert_ne!(a.tag(), b.tag());
        assert_eq!(
            a.tag(),
            Identity::resolve(Some("a"), Some("u")).unwrap().tag()
        );
        assert_eq!(a.tag().len(), 12);
    }

    #[test]
    fn defaults_come_from_the_system() {
        let id = Identity::resolve(None, None).unwrap();
        assert!(!id.host.is_empty() && !id.user.is_empty());
        assert!(Identity::resolve(Some("a\nb"), None).is_err());
    }
}
