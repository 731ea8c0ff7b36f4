//! Bearer-token authentication of the API (config `api.tokens_file`, env
//! `CLAUDE_INGEST_API_TOKENS`).
//!
//! Both hold the same YAML (or JSON) list; each entry names a token, gives the
//! token itself or the hex SHA-256 of it (so the file need not hold secrets),
//! and optionally a scope:
//!
//! ```yaml
//! - name: grafana
//!   sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! - name: alice
//!   token: "a long random string"
//!   scope: { user: alice }
//! - name: ci
//!   token: "another one"
//!   scope: { project: -home-ci-repo, host: build-01 }
//! - name: prometheus
//!   token: "a third one"
//!   metrics_only: true
//! ```
//!
//! Only digests are kept in memory; a presented token is hashed and compared
//! with every digest in constant time (no early exit), so timing tells nothing
//! about which bytes matched. A scoped token's scope becomes filters that every
//! query gets server-side ([`Scope::apply`]): such a token sees only its rows.

use super::params::Filters;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The env variable that may hold tokens (same format as the file).
pub const TOKENS_ENV: &str = "CLAUDE_INGEST_API_TOKENS";

/// What a token may see: rows whose identity columns match every given field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub user: Option<String>,
    pub project: Option<String>,
    pub host: Option<String>,
}

impl Scope {
    /// Scoped at all (an unscoped token sees everything, health and metrics included).
    pub fn is_scoped(&self) -> bool {
        self.user.is_some() || self.project.is_some() || self.host.is_some()
    }

    /// Narrow `f` to this scope. A request that asks for another value than
    /// the scope's (e.g. `project=b` with a token scoped to `a`) is refused
    /// rather than silently answered for `a`.
    pub fn apply(&self, f: &mut Filters) -> Result<(), String> {
        for (name, scoped, asked) in [
            ("user", &self.user, &mut f.user),
            ("project", &self.project, &mut f.project),
            ("host", &self.host, &mut f.host),
        ] {
            let Some(scoped) = scoped else { continue };
            if name == "project" {
                f.project_scope = scoped.clone();
            }
            if !asked.is_empty() && asked != scoped {
                return Err(format!("this token may only read {name} `{scoped}`"));
            }
            *asked = scoped.clone();
        }
        Ok(())
    }
}

/// One entry of the tokens file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    name: String,
    token: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    scope: Scope,
    /// May read `/metrics` and `/healthz` only (for a Prometheus scraper).
    #[serde(default)]
    metrics_only: bool,
}

/// A known token: its name (for logs), digest and scope.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    pub scope: Scope,
    pub metrics_only: bool,
}

/// The configured tokens; none means the API is open (loopback only, unless
/// the operator said `--insecure-no-auth`).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal without an early exit: the time taken does not depend on where the
/// digests differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens from the file (when given) and the env variable's text (when set).
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Tokens> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read api.tokens_file {}", path.display()))?;
            tokens.extend(
                parse(&text).with_context(|| format!("in api.tokens_file {}", path.display()))?,
            );
        }
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            tokens.extend(parse(text).with_context(|| format!("in env {TOKENS_ENV}"))?);
        }
        Ok(Tokens { tokens })
    }

    /// The token `presented` matches, comparing against every digest.
    pub fn check(&self, presented: &str) -> Option<&Token> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if same(&t.digest, &digest) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

/// Parse a YAML/JSON list of token entries, checking each.
fn parse(text: &str) -> Result<Vec<Token>> {
    let specs: Vec<TokenSpec> =
        serde_yaml::from_str(text).context("expected a list of {name, token | sha256, scope}")?;
    let mut out: Vec<Token> = Vec::with_capacity(specs.len());
    for s in specs {
        let digest = match (&s.token, &s.sha256) {
            (Some(t), None) if t.len() >= 16 => sha256(t.as_bytes()),
            (Some(_), None) => bail!("token `{}` is shorter than 16 characters", s.name),
            (None, Some(h)) => hex::decode(h.trim())
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .with_context(|| format!("token `{}`: sha256 must be 64 hex digits", s.name))?,
            _ => bail!(
                "token `{}` needs exactly one of `token` or `sha256`",
                s.name
            ),
        };
        for v in [&s.scope.user, &s.scope.project, &s.scope.host]
            .into_iter()
            .flatten()
        {
            if v.is_empty() || v.chars().any(char::is_control) {
                bail!("token `{}`: scope values must be non-empty text", s.name);
            }
        }
        if out.iter().any(|t| t.name == s.name) {
            bail!("token name `{}` is used twice", s.name);
        }
        out.push(Token {
            name: s.name,
            digest,
            scope: s.scope,
            metrics_only: s.metrics_only,
        });
    }
    Ok(out)
}

/// `Authorization: Bearer <token>` → the token.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Is `listen` (host:port) a loopback address (where the API may run open)?
pub fn is_loopback(listen: &str) -> bool {
    let host = match listen.rsplit_once(':') {
        Some((h, _)) => h,
        None => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
- name: admin
  token: "0123456789abcdef-admin"
- name: alice
  sha256: "SHA"
  scope: { user: alice, project: p1 }
"#;

    fn tokens() -> Tokens {
        let digest = hex::encode(sha256(b"alice-secret-token-1"));
        let text = FILE.replace("SHA", &digest);
        Tokens::load(None, Some(&text)).unwrap()
    }

    #[test]
    fn checks_tokens_and_hashes() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check("0123456789abcdef-admin").unwrap().name, "admin");
        let alice = t.check("alice-secret-token-1").unwrap();
        assert_eq!(alice.scope.user.as_deref(), Some("alice"));
        assert!(t.check("0123456789abcdef-admin ").is_none());
        assert!(t.check("").is_none());
        assert!(t.check("wrong").is_none());
    }

    #[test]
    fn json_works_too_and_bad_entries_are_refused() {
        let t = Tokens::load(
            None,
            Some(r#"[{"name": "x", "token": "aaaaaaaaaaaaaaaaaaaa", "scope": {"host": "h1"}}]"#),
        )
        .unwrap();
        assert_eq!(
            t.check("aaaaaaaaaaaaaaaaaaaa")
                .unwrap()
                .scope
                .host
                .as_deref(),
            Some("h1")
        );
        for bad in [
            r#"[{"name": "x", "token": "short"}]"#,
            r#"[{"name": "x"}]"#,
            r#"[{"name": "x", "sha256": "abcd"}]"#,
            r#"[{"name": "x", "token": "aaaaaaaaaaaaaaaaaaaa", "scope": {"team": "a"}}]"#,
            r#"[{"name": "x", "token": "aaaaaaaaaaaaaaaaaaaa"}, {"name": "x", "token": "bbbbbbbbbbbbbbbbbbbb"}]"#,
            "not a list",
        ] {
            assert!(Tokens::load(None, Some(bad)).is_err(), "{bad}");
        }
        assert!(Tokens::load(None, Some("  ")).unwrap().is_empty());
    }

    #[test]
    fn scope_narrows_and_refuses_other_values() {
        let scope = Scope {
            user: Some("alice".into()),
            project: None,
            host: None,
        };
        let mut f = crate::api::params::parse(&Default::default(), &["user"], 10).unwrap();
        scope.apply(&mut f).unwrap();
        assert_eq!(f.user, "alice");
        f.user = "bob".into();
        assert!(scope.apply(&mut f).unwrap_err().contains("alice"));
        f.user = "alice".into();
        f.project = "any".into();
        scope.apply(&mut f).unwrap();
        assert_eq!(f.project, "any", "unscoped dimensions stay as asked");
    }

    #[test]
    fn bearer_and_loopback() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
        for l in [
            "127.0.0.1:8787",
            "localhost:1",
            "[::1]:8787",
            "127.0.0.2:80",
        ] {
            assert!(is_loopback(l), "{l}");
        }
        for l in [
            "0.0.0.0:8787",
            "[::]:8787",
            "192.168.1.5:8787",
            "example.org:80",
        ] {
            assert!(!is_loopback(l), "{l}");
        }
    }
}
