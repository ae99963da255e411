//! The gateway's seal key: one Ed25519 signing key in `<data_dir>/gateway.key`, as the agent
//! keeps its key (`agent/src/identity.rs`).
//!
//! Invariants:
//! - created once, on first use, from 32 bytes of OS randomness, and never overwritten: a
//!   corrupt or unreadable key file is an error naming the file, never a reason to make a new
//!   key (a new key starts a new seal chain, and auditors must be told the new public key);
//! - creation is atomic: a temporary file (mode 0600) is written, fsynced, linked into place
//!   (never replacing an existing file) and the directory fsynced;
//! - on Unix the key file must not be accessible by group or others (checked at every load).
//!
//! File format (text): `shopfloor-gateway-key/1\n<standard base64 of the 32-byte seed>\n`.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;

/// Name of the key file inside `gateway.data_dir`.
pub const KEY_FILE: &str = "gateway.key";
/// First line of the key file.
pub const KEY_HEADER: &str = "shopfloor-gateway-key/1";

/// Why the key could not be loaded or created. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: the gateway key is accessible by group or others (mode {mode:04o}); refusing to \
         use it. Run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{}: not a valid gateway key file: {reason} (the file was left untouched; restore it \
         from a backup, or move it away to create a new key, which starts a new seal chain)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot create the gateway key: OS random number generator failed: {0}")]
    Random(String),
}

/// Path of the key file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// Loads `<data_dir>/gateway.key`, creating it (and `data_dir`, mode 0700) if it does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let file = path(data_dir);
    match fs::symlink_metadata(&file) {
        Ok(_) => return read(&file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(KeyError::Io {
                path: file,
                action: "inspect the key file",
                source: e,
            });
        }
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b.create(data_dir).map_err(|e| KeyError::Io {
        path: data_dir.to_owned(),
        action: "create the data directory",
        source: e,
    })?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let written = write_new(data_dir, &file, &seed);
    seed.fill(0);
    written?;
    // Ours, or the key another process created first.
    read(&file)
}

/// Loads an existing key; `None` when there is none (`verify` never creates one).
pub fn load(data_dir: &Path) -> Result<Option<SigningKey>, KeyError> {
    let file = path(data_dir);
    match fs::symlink_metadata(&file) {
        Ok(_) => read(&file).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::Io {
            path: file,
            action: "inspect the key file",
            source: e,
        }),
    }
}

fn write_new(dir: &Path, file: &Path, seed: &[u8; 32]) -> Result<(), KeyError> {
    let tmp = dir.join(format!(".{KEY_FILE}.tmp.{}", std::process::id()));
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| KeyError::Io {
            path: p,
            action,
            source,
        }
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove a stale temporary key file", &tmp)(e)),
    }
    let text = format!("{KEY_HEADER}\n{}\n", BASE64.encode(seed));
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
        // A hard link never replaces an existing key (another process may have made one).
        match fs::hard_link(&tmp, file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) if file.exists() => {}
            Err(_) => fs::rename(&tmp, file).map_err(io_err("move the key into place", file))?,
        }
        #[cfg(unix)]
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync the data directory", dir))?;
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn read(file: &Path) -> Result<SigningKey, KeyError> {
    let corrupt = |reason: &str| KeyError::Corrupt {
        path: file.to_owned(),
        reason: reason.to_owned(),
    };
    let meta = fs::metadata(file).map_err(|e| KeyError::Io {
        path: file.to_owned(),
        action: "read the key file",
        source: e,
    })?;
    if !meta.is_file() {
        return Err(corrupt("not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: file.to_owned(),
                mode,
            });
        }
    }
    let text = fs::read_to_string(file).map_err(|e| KeyError::Io {
        path: file.to_owned(),
        action: "read the key file",
        source: e,
    })?;
    let mut lines = text.lines();
    if lines.next() != Some(KEY_HEADER) {
        return Err(corrupt(&format!("the first line is not {KEY_HEADER}")));
    }
    let seed = lines
        .next()
        .and_then(|l| BASE64.decode(l.trim()).ok())
        .ok_or_else(|| corrupt("the second line is not standard base64"))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("the key is not 32 bytes"))?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(corrupt("unexpected lines after the key"));
    }
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = load_or_create(&data).unwrap();
        let b = load_or_create(&data).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes(), "never overwritten");
        assert_eq!(
            load(&data).unwrap().map(|k| k.to_bytes()),
            Some(a.to_bytes())
        );
        assert!(load(dir.path()).unwrap().is_none(), "no key: none");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let file = path(&data);
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_or_create(&data).unwrap_err();
            assert!(matches!(e, KeyError::Permissions { .. }), "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::write(path(&data), "garbage\n").unwrap();
        let e = load_or_create(&data).unwrap_err();
        assert!(matches!(e, KeyError::Corrupt { .. }), "{e}");
        assert_eq!(fs::read_to_string(path(&data)).unwrap(), "garbage\n");
    }
}
