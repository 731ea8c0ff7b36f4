//! What the binary carries so it runs from any directory, with no repository
//! at hand: the default rule pack and the example plugins that existed at
//! build time (see `build.rs`), plus the places an installed binary looks for
//! the user's own files.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The default rule pack: (file name, YAML), sorted by name.
pub fn rules() -> &'static [(&'static str, &'static str)] {
    RULES
}

/// The example plugins (`*.wat` always, `*.wasm` when built before the
/// binary) and the DDL of the tables they write (`<plugin>.sql`): (file name, bytes).
pub fn plugins() -> &'static [(&'static str, &'static [u8])] {
    PLUGINS
}

/// `$CLAUDE_INGEST_HOME`, default `~/.local/share/claude-ingest`: the engine's
/// venv, installed plugins and (under `state/`) checkpoints and data.
pub fn data_home() -> PathBuf {
    std::env::var_os("CLAUDE_INGEST_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share/claude-ingest"))
}

/// `$XDG_CONFIG_HOME/claude-ingest` (default `~/.config/claude-ingest`), on
/// macOS too, so the documented path is one path.
pub fn config_home() -> PathBuf {
    xdg_config_home().join("claude-ingest")
}

/// `$XDG_CONFIG_HOME`, default `~/.config` (systemd user units live under it).
pub fn xdg_config_home() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
}

/// The user's rules dir when `--rules` is not given and `./rules` does not
/// exist: it overrides or extends the built-in pack, and may be missing.
pub fn user_rules_dir() -> PathBuf {
    config_home().join("rules")
}

/// Where `setup` installs the example plugins (the default plugins dir when
/// `./plugins/dist` does not exist).
pub fn installed_plugins_dir() -> PathBuf {
    data_home().join("plugins")
}

pub fn home() -> PathBuf {
    dirs::home_dir().unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_pack_is_embedded_in_name_order() {
        let names: Vec<&str> = super::rules().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"30-tables.yaml"), "{names:?}");
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "yaml")
            })
            .count();
        assert_eq!(names.len(), on_disk);
    }

    #[test]
    fn the_wat_example_plugin_is_embedded() {
        assert!(super::plugins().iter().any(|(n, _)| *n == "email_mask.wat"));
    }
}
