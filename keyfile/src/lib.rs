//! The Ed25519 key files of Shopfloor: the agent's `agent.key` (signs batches) and the gateway's
//! `gateway.key` (signs seals). One implementation, so both keep the same guarantees:
//!
//! - a key is created once, on first use, from 32 bytes of OS randomness (`getrandom`), and
//!   never overwritten: a corrupt or unreadable key file is an error naming the file, never a
//!   reason to make a new key (a new key has to be announced to whoever verifies);
//! - creation is atomic: a temporary file (mode 0600) is written, fsynced, linked into place
//!   (never replacing an existing file) and the directory fsynced, so a power cut leaves either
//!   no key or the whole key; two processes creating at once end with one key, read by both;
//! - on Unix a key file must not be accessible by group or others (checked at every load, like
//!   ssh); a new directory is created with mode 0700.
//!
//! File format (text): `<header>\n<standard base64 of the 32-byte secret seed>\n`, the header
//! naming the kind (`shopfloor-agent-key/1`, `shopfloor-gateway-key/1`).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;

/// A kind of key file: its header and how messages name it.
#[derive(Debug, Clone, Copy)]
pub struct KeyKind {
    /// First line of the file.
    pub header: &'static str,
    /// `agent key`, `gateway key`.
    pub name: &'static str,
    /// What making a new key means, for the corrupt-file message.
    pub new_key_means: &'static str,
}

/// Why a key could not be loaded or created. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file system operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "{}: the {name} is accessible by group or others (mode {mode:04o}); refusing to use it. \
         Run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        name: &'static str,
    },
    /// The key file exists but is not a valid key file (it is left untouched).
    #[error(
        "{}: not a valid {name} file: {reason} (the file was left untouched; restore it from a \
         backup, or move it away to create a new key, {new_key_means})",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        reason: String,
        name: &'static str,
        new_key_means: &'static str,
    },
    /// The OS random number generator failed.
    #[error("cannot create the {name}: OS random number generator failed: {reason}")]
    Random { name: &'static str, reason: String },
}

impl KeyKind {
    /// Loads the key in `path`, creating it (and its directory, mode 0700) if there is none.
    /// Also tells whether it was created now.
    pub fn load_or_create(&self, path: &Path) -> Result<(SigningKey, bool), KeyError> {
        if let Some(key) = self.load_if_present(path)? {
            return Ok((key, false));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        create_dir(dir)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random {
            name: self.name,
            reason: e.to_string(),
        })?;
        let created = self.write_new(dir, path, &seed);
        seed.fill(0);
        // Read back what is on disk: ours, or the key another process created first.
        let created = created?;
        self.read(path).map(|k| (k, created))
    }

    /// Loads an existing key; `None` when there is no file.
    pub fn load_if_present(&self, path: &Path) -> Result<Option<SigningKey>, KeyError> {
        match fs::symlink_metadata(path) {
            Ok(_) => self.read(path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::Io {
                path: path.to_owned(),
                action: "inspect the key file",
                source: e,
            }),
        }
    }

    /// Loads an existing key; a missing file is [`KeyError::Io`] (`NotFound`).
    pub fn read(&self, path: &Path) -> Result<SigningKey, KeyError> {
        let corrupt = |reason: String| KeyError::Corrupt {
            path: path.to_owned(),
            reason,
            name: self.name,
            new_key_means: self.new_key_means,
        };
        let meta = fs::metadata(path).map_err(|e| KeyError::Io {
            path: path.to_owned(),
            action: "read the key file",
            source: e,
        })?;
        if !meta.is_file() {
            return Err(corrupt("not a regular file".to_owned()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                    name: self.name,
                });
            }
        }
        if meta.len() > 4096 {
            return Err(corrupt(format!(
                "{} bytes, far too long for a key file",
                meta.len()
            )));
        }
        let bytes = fs::read(path).map_err(|e| KeyError::Io {
            path: path.to_owned(),
            action: "read the key file",
            source: e,
        })?;
        self.parse(&bytes).map_err(corrupt)
    }

    fn parse(&self, bytes: &[u8]) -> Result<SigningKey, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        if text.is_empty() {
            return Err("empty file".to_owned());
        }
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        if header.trim() != self.header {
            return Err(format!("first line must be {:?}", self.header));
        }
        let seed_text = lines
            .next()
            .map(str::trim)
            .ok_or_else(|| "second line (the base64 secret key) is missing".to_owned())?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("unexpected lines after the key".to_owned());
        }
        let seed = BASE64
            .decode(seed_text)
            .map_err(|e| format!("second line is not standard base64: {e}"))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| format!("the secret key must be 32 bytes, got {}", seed.len()))?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Writes a new key file atomically. Returns `false` if a key file appeared meanwhile (it
    /// is kept, ours discarded).
    fn write_new(&self, dir: &Path, path: &Path, seed: &[u8; 32]) -> Result<bool, KeyError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_owned();
            move |source| KeyError::Io {
                path: p,
                action,
                source,
            }
        };
        // A leftover of an earlier crash of this same process id: ours to remove.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove a stale temporary key file", &tmp)(e)),
        }
        let text = format!("{}\n{}\n", self.header, BASE64.encode(seed));
        let result = (|| {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .map_err(io_err("create the temporary key file", &tmp))?;
            f.write_all(text.as_bytes())
                .map_err(io_err("write the temporary key file", &tmp))?;
            f.sync_all()
                .map_err(io_err("fsync the temporary key file", &tmp))?;
            drop(f);
            // A hard link never replaces an existing file; fall back to rename where links are
            // not supported (FAT), after checking again that no key exists.
            let placed = match fs::hard_link(&tmp, path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(_) => {
                    if path.exists() {
                        false
                    } else {
                        fs::rename(&tmp, path)
                            .map_err(io_err("move the new key file into place", path))?;
                        true
                    }
                }
            };
            sync_dir(dir)?;
            Ok(placed)
        })();
        // Best effort: a leftover temporary file is removed by the next attempt of this pid.
        let _ = fs::remove_file(&tmp);
        result
    }
}

/// Creates `dir` (and its parents) with mode 0700 on Unix.
pub fn create_dir(dir: &Path) -> Result<(), KeyError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| KeyError::Io {
        path: dir.to_owned(),
        action: "create the data directory",
        source: e,
    })
}

/// Fsyncs a directory (after a file in it was created or renamed); a no-op off Unix.
pub fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| KeyError::Io {
                path: dir.to_owned(),
                action: "fsync the data directory",
                source: e,
            })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: KeyKind = KeyKind {
        header: "test-a-key/1",
        name: "a key",
        new_key_means: "which means nothing here",
    };
    const B: KeyKind = KeyKind {
        header: "test-b-key/1",
        name: "b key",
        new_key_means: "which means nothing here",
    };

    #[test]
    fn created_once_and_kinds_are_not_interchangeable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/a.key");
        let (k1, created) = A.load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = A.load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        assert_eq!(
            A.load_if_present(&path).unwrap().unwrap().to_bytes(),
            k1.to_bytes()
        );
        assert!(
            A.load_if_present(&tmp.path().join("none"))
                .unwrap()
                .is_none()
        );
        // A key of another kind is refused, named, and left as it is.
        let e = B.read(&path).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, KeyError::Corrupt { .. }), "{msg}");
        assert!(
            msg.contains("not a valid b key file") && msg.contains("test-b-key/1"),
            "{msg}"
        );
        assert_eq!(A.read(&path).unwrap().to_bytes(), k1.to_bytes());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.key")]);
    }
}
