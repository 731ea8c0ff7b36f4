//! Embeds what an installed binary needs without the repository: the default
//! rule pack (`rules/*.yaml`) and the example plugins that exist at build time
//! (WAT sources always; compiled `plugins/dist/<example>.wasm` only when
//! `plugins/build.sh` has run, since C needs a wasm toolchain). `src/builtin.rs`
//! includes the generated list.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    // Directories, so added and removed files count too; `plugins` (always
    // present) rather than `plugins/dist`, which a fresh clone lacks: a
    // missing path would rerun this script on every build.
    println!("cargo:rerun-if-changed=rules");
    println!("cargo:rerun-if-changed=plugins");

    let mut code = String::from("pub const RULES: &[(&str, &str)] = &[\n");
    for f in files(&root.join("rules"), &["yaml", "yml"]) {
        let _ = writeln!(code, "    ({:?}, include_str!({f:?})),", name(&f));
    }
    code.push_str("];\n\npub const PLUGINS: &[(&str, &[u8])] = &[\n");
    for (n, f) in example_plugins(&root.join("plugins")) {
        let _ = writeln!(code, "    ({n:?}, include_bytes!({f:?})),");
    }
    code.push_str("];\n");
    std::fs::write(out.join("builtin.rs"), code).expect("write builtin.rs");
}

/// (name, file) of each example plugin available without a wasm toolchain:
/// its `*.wat`, its `dist/<example>.wasm` when `plugins/build.sh` built it, and
/// with either its `table.sql` as `<example>.sql` (the name `build.sh` gives it).
fn example_plugins(plugins: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in subdirs(&plugins.join("examples")) {
        let example = name(&dir);
        let mut found: Vec<PathBuf> = files(&dir, &["wat"]);
        let wasm = plugins.join("dist").join(format!("{example}.wasm"));
        if wasm.is_file() {
            found.push(wasm);
        }
        let table = dir.join("table.sql");
        if !found.is_empty() && table.is_file() {
            out.push((format!("{example}.sql"), table));
        }
        out.extend(found.into_iter().map(|f| (name(&f), f)));
    }
    out.sort();
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| exts.contains(&x))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
