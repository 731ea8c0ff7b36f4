//! Durable per-file offsets: one JSON file, replaced atomically (write tmp,
//! fsync, rename, fsync dir) so a crash leaves either the old or the new map.

use super::FileId;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where reading a file resumes: identity, byte offset, and a fingerprint of
/// the file's first bytes (to notice a file replaced or rewritten while we
/// were not running, even if the inode number was reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    pub file_id: FileId,
    pub offset: u64,
    pub fingerprint: u64,
}

/// Bytes of a file's head covered by the fingerprint.
pub const FINGERPRINT_BYTES: usize = 4096;

/// FNV-1a 64 of the first min(len, 4096) bytes.
pub fn fingerprint_bytes(head: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &head[..head.len().min(FINGERPRINT_BYTES)] {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Serde for `Vec<(PathBuf, T)>` that keeps every path exactly. serde's own
/// `PathBuf` impl refuses a path that is not UTF-8, and one such project
/// directory then failed every checkpoint commit and every spooled batch:
/// nothing was stored at all. A UTF-8 path is written as a string (as
/// before); any other as `{"unix_bytes_hex": "..."}`.
pub mod lossless_paths {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Raw { unix_bytes_hex: String },
    }

    fn repr(p: &Path) -> Repr {
        match p.to_str() {
            Some(s) => Repr::Text(s.to_owned()),
            None => Repr::Raw {
                unix_bytes_hex: hex::encode(p.as_os_str().as_bytes()),
            },
        }
    }

    fn path(r: Repr) -> Result<PathBuf, hex::FromHexError> {
        match r {
            Repr::Text(s) => Ok(PathBuf::from(s)),
            Repr::Raw { unix_bytes_hex } => Ok(PathBuf::from(OsStr::from_bytes(&hex::decode(
                unix_bytes_hex,
            )?))),
        }
    }

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &[(PathBuf, T)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(p, t)| (repr(p), t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(PathBuf, T)>, D::Error> {
        Vec::<(Repr, T)>::deserialize(d)?
            .into_iter()
            .map(|(r, t)| path(r).map(|p| (p, t)).map_err(D::Error::custom))
            .collect()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(with = "lossless_paths")]
    files: Vec<(PathBuf, FileCheckpoint)>,
}

pub struct CheckpointStore {
    path: PathBuf,
    map: HashMap<PathBuf, FileCheckpoint>,
}

impl CheckpointStore {
    pub fn open(path: &Path) -> Result<CheckpointStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let map = match std::fs::read(path) {
            Ok(data) => {
                let d: OnDisk = serde_json::from_slice(&data).with_context(|| {
                    format!(
                        "checkpoint file {} is corrupt (delete it to re-read every file from the start)",
                        path.display()
                    )
                })?;
                d.files.into_iter().collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(CheckpointStore {
            path: path.to_path_buf(),
            map,
        })
    }

    pub fn get(&self, path: &Path) -> Option<FileCheckpoint> {
        self.map.get(path).copied()
    }

    pub fn all(&self) -> HashMap<PathBuf, FileCheckpoint> {
        self.map.clone()
    }

    /// Apply updates (None = forget the file) and persist durably.
    pub fn commit(&mut self, updates: &[(PathBuf, Option<FileCheckpoint>)]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        for (p, cp) in updates {
            match cp {
                Some(cp) => {
                    self.map.insert(p.clone(), *cp);
                }
                None => {
                    self.map.remove(p);
                }
            }
        }
        let mut files: Vec<(PathBuf, FileCheckpoint)> =
            self.map.iter().map(|(p, c)| (p.clone(), *c)).collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let data = serde_json::to_vec_pretty(&OnDisk { version: 1, files })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_forget_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/cp.json");
        let mut s = CheckpointStore::open(&p).unwrap();
        assert!(s.all().is_empty());
        let cp = FileCheckpoint {
            file_id: FileId { dev: 1, ino: 2 },
            offset: 10,
            fingerprint: fingerprint_bytes(b"abc"),
        };
        s.commit(&[
            (PathBuf::from("/a"), Some(cp)),
            (PathBuf::from("/b"), Some(cp)),
        ])
        .unwrap();
        s.commit(&[(PathBuf::from("/b"), None)]).unwrap();
        let s2 = CheckpointStore::open(&p).unwrap();
        assert_eq!(s2.get(Path::new("/a")), Some(cp));
        assert_eq!(s2.get(Path::new("/b")), None);
        assert!(!p.with_extension("json.tmp").exists());
        std::fs::write(&p, b"{not json").unwrap();
        let err = CheckpointStore::open(&p).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn fingerprint_covers_only_the_head() {
        let mut a = vec![b'x'; 5000];
        let fa = fingerprint_bytes(&a);
        a[4999] = b'y';
        assert_eq!(fingerprint_bytes(&a), fa);
        a[10] = b'y';
        assert_ne!(fingerprint_bytes(&a), fa);
    }
}
