//! The gateway's seal key: one Ed25519 signing key in `<data_dir>/gateway.key`, a
//! [`shopfloor_keyfile`] key file like the agent's: created once on first use (0600, atomic
//! write), never overwritten (a new key starts a new seal chain, and auditors must be told the
//! new public key), refused when readable by group or others.
//!
//! File format (text): `shopfloor-gateway-key/1\n<standard base64 of the 32-byte seed>\n`.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use shopfloor_keyfile::KeyKind;

/// Why the key could not be loaded or created (every variant names the file).
pub use shopfloor_keyfile::KeyError;

/// Name of the key file inside `gateway.data_dir`.
pub const KEY_FILE: &str = "gateway.key";
/// First line of the key file.
pub const KEY_HEADER: &str = "shopfloor-gateway-key/1";

const KIND: KeyKind = KeyKind {
    header: KEY_HEADER,
    name: "gateway key",
    new_key_means: "which starts a new seal chain",
};

/// Path of the key file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// Loads `<data_dir>/gateway.key`, creating it (and `data_dir`, mode 0700) if it does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
    KIND.load_or_create(&path(data_dir)).map(|(key, _)| key)
}

/// Loads an existing key; `None` when there is none (`verify` never creates one).
pub fn load(data_dir: &Path) -> Result<Option<SigningKey>, KeyError> {
    KIND.load_if_present(&path(data_dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::fs;

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
