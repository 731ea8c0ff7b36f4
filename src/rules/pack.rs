//! Where a rule pack comes from: the built-in default pack (compiled into the
//! binary) overlaid by a user directory. A user file with the same name as a
//! built-in one replaces it (an empty file switches it off); other user files
//! extend the pack. Files apply in name order, whoever provides them.

use super::{RuleError, RuleErrors, RuleSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The prefix built-in files carry in messages (`<built-in>/30-tables.yaml:12: ...`).
pub const BUILTIN_PREFIX: &str = "<built-in>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// Start from the built-in pack (config `builtin_rules`, default true).
    pub builtin: bool,
    /// The user's directory (watched for hot reload).
    pub dir: PathBuf,
    /// A missing `dir` means "no user files" instead of an error (the default
    /// `~/.config/claude-ingest/rules`; a dir the user named must exist).
    pub dir_optional: bool,
}

/// Who provides one file of the pack in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Builtin,
    User { overrides_builtin: bool },
}

/// One file of the pack in effect.
#[derive(Debug, Clone)]
pub struct PackFile {
    pub name: String,
    /// The path messages use: the user file, or `<built-in>/<name>`.
    pub path: PathBuf,
    pub provider: Provider,
    pub text: String,
}

impl RuleSource {
    /// The user's directory alone (tests, `builtin_rules: false`).
    pub fn dir_only(dir: &Path) -> RuleSource {
        RuleSource {
            builtin: false,
            dir: dir.to_path_buf(),
            dir_optional: false,
        }
    }

    /// Every file of the pack in effect, in the order they apply.
    pub fn files(&self) -> Result<Vec<PackFile>, RuleErrors> {
        let mut pack: BTreeMap<String, PackFile> = BTreeMap::new();
        if self.builtin {
            for (name, text) in crate::builtin::rules() {
                pack.insert(
                    (*name).to_string(),
                    PackFile {
                        name: (*name).to_string(),
                        path: Path::new(BUILTIN_PREFIX).join(name),
                        provider: Provider::Builtin,
                        text: (*text).to_string(),
                    },
                );
            }
        }
        for (path, text) in self.user_files()? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let overrides_builtin = pack.contains_key(&name);
            pack.insert(
                name.clone(),
                PackFile {
                    name,
                    path,
                    provider: Provider::User { overrides_builtin },
                    text,
                },
            );
        }
        if pack.is_empty() {
            return Err(one_error(
                &self.dir,
                "no rule files (*.yaml) in the rules directory",
            ));
        }
        Ok(pack.into_values().collect())
    }

    /// Load and validate the pack in effect.
    pub fn load(&self) -> Result<RuleSet, RuleErrors> {
        let sources: Vec<(PathBuf, String)> = self
            .files()?
            .into_iter()
            .map(|f| (f.path, f.text))
            .collect();
        RuleSet::from_sources(&sources)
    }

    /// `*.yaml` / `*.yml` of the user's directory, read; every problem reported.
    fn user_files(&self) -> Result<Vec<(PathBuf, String)>, RuleErrors> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.dir_optional => Vec::new(),
            Err(e) => {
                return Err(one_error(
                    &self.dir,
                    &format!("cannot read rules directory: {e}"),
                ))
            }
        };
        files.sort();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(t) => out.push((f, t)),
                Err(e) => errors.push(RuleError {
                    file: f,
                    line: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// One line for logs: "built-in pack + /home/me/.config/claude-ingest/rules".
    pub fn describe(&self) -> String {
        let dir = if self.dir.is_dir() {
            self.dir.display().to_string()
        } else {
            format!("{} (absent)", self.dir.display())
        };
        if self.builtin {
            format!("built-in pack + {dir}")
        } else {
            dir
        }
    }
}

fn one_error(file: &Path, message: &str) -> RuleErrors {
    RuleErrors(vec![RuleError {
        file: file.to_path_buf(),
        line: None,
        message: message.to_string(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> RuleSource {
        RuleSource {
            builtin: true,
            dir: dir.to_path_buf(),
            dir_optional: true,
        }
    }

    #[test]
    fn builtin_alone_loads_when_the_optional_dir_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = source(&tmp.path().join("absent"));
        let files = src.files().unwrap();
        assert_eq!(files.len(), crate::builtin::rules().len());
        assert!(files.iter().all(|f| f.provider == Provider::Builtin));
        assert!(src.load().unwrap().table_rules().len() > 3);
        let named = RuleSource {
            dir_optional: false,
            ..src
        };
        let err = named.files().unwrap_err().to_string();
        assert!(err.contains("cannot read rules directory"), "{err}");
    }

    #[test]
    fn a_user_file_overrides_by_name_and_others_extend() {
        let tmp = tempfile::tempdir().unwrap();
        // An empty file of a built-in name switches that file off.
        std::fs::write(tmp.path().join("50-plugins.yaml"), "").unwrap();
        std::fs::write(
            tmp.path().join("60-local.yaml"),
            "classify:\n  - label: local\n    when: \"type == 'user'\"\n",
        )
        .unwrap();
        let src = source(tmp.path());
        let files = src.files().unwrap();
        let by_name = |n: &str| files.iter().find(|f| f.name == n).unwrap();
        assert_eq!(
            by_name("50-plugins.yaml").provider,
            Provider::User {
                overrides_builtin: true
            }
        );
        assert_eq!(
            by_name("60-local.yaml").provider,
            Provider::User {
                overrides_builtin: false
            }
        );
        assert_eq!(by_name("30-tables.yaml").provider, Provider::Builtin);
        let rs = src.load().unwrap();
        assert!(
            rs.plugin_names().is_empty(),
            "50-plugins.yaml is switched off"
        );
        assert_eq!(files.last().unwrap().name, "60-local.yaml");
    }

    #[test]
    fn errors_name_the_file_they_are_in() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("30-tables.yaml"), "tables: [\n").unwrap();
        let err = source(tmp.path()).load().unwrap_err().to_string();
        assert!(err.contains("30-tables.yaml:"), "{err}");
        assert!(!err.contains(BUILTIN_PREFIX), "{err}");
    }
}
