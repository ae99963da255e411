//! The agent's identity: one Ed25519 signing key in `<data_dir>/agent.key`.
//!
//! The file is a [`shopfloor_keyfile`] key file, with its guarantees: created once (0600,
//! atomic write), never overwritten except by activating a staged key, refused when readable
//! by group or others; a new data directory gets mode 0700.
//!
//! File format (text): `shopfloor-agent-key/1\n<standard base64 of the 32-byte secret seed>\n`.
//! The public key is printed by `shopfloor-agent key show` as `ed25519:<base64>` (see
//! [`shopfloor_core::batch::public_key_text`]) and registered at the gateway.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ed25519_dalek::SigningKey;
use shopfloor_keyfile::{KeyKind, sync_dir};

use shopfloor_core::batch::public_key_text;

/// Why the key could not be loaded or created (every variant names the file).
pub use shopfloor_keyfile::KeyError as IdentityError;

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "agent.key";

/// First line of the key file.
pub const KEY_HEADER: &str = "shopfloor-agent-key/1";

const KIND: KeyKind = KeyKind {
    header: KEY_HEADER,
    name: "agent key",
    new_key_means: "which must then be registered at the gateway",
};

/// Name of the staged next key (`shopfloor-agent key rotate`), activated by `key activate`.
pub const NEXT_KEY_FILE: &str = "agent.key.next";

/// Path of the staged next key in `data_dir`.
pub fn next_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(NEXT_KEY_FILE)
}

/// Stages a new key in `<data_dir>/agent.key.next` (created once, like the key itself; a staged
/// key is kept and returned again) while the agent goes on signing with `agent.key`. Returns
/// the staged key and whether it was created now. The current key must exist.
pub fn stage_next(data_dir: &Path) -> Result<(SigningKey, bool), IdentityError> {
    KIND.read(&key_path(data_dir))?;
    KIND.load_or_create(&next_key_path(data_dir))
}

/// Makes the staged key the agent's key: `agent.key.next` replaces `agent.key` in one atomic
/// rename (the old secret is gone), and the directory is fsynced. Returns the new key.
pub fn activate_next(data_dir: &Path) -> Result<SigningKey, IdentityError> {
    let next = next_key_path(data_dir);
    let key = KIND.read(&next)?;
    let path = key_path(data_dir);
    fs::rename(&next, &path).map_err(|e| IdentityError::Io {
        path: path.clone(),
        action: "replace the key with the staged key",
        source: e,
    })?;
    sync_dir(data_dir)?;
    Ok(key)
}

/// Path of the key file in `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// Loads `<data_dir>/agent.key`, creating it (and `data_dir`, mode 0700) if it does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, IdentityError> {
    load_or_create_reporting(data_dir).map(|(key, _)| key)
}

/// Loads an existing key; a missing file is an [`IdentityError::Io`] (`NotFound`).
pub fn load(data_dir: &Path) -> Result<SigningKey, IdentityError> {
    KIND.read(&key_path(data_dir))
}

/// [`load_or_create`], also telling whether the key was created now.
fn load_or_create_reporting(data_dir: &Path) -> Result<(SigningKey, bool), IdentityError> {
    KIND.load_or_create(&key_path(data_dir))
}

/// `shopfloor-agent key show`: prints the public key (`ed25519:<base64>`) on stdout, creating
/// the key on first use. The data directory comes from `--data-dir`, or from `agent.data_dir`
/// of `--config`. Exit 2 for bad input (no or unreadable config), 1 for runtime failures
/// (key file unreadable, corrupt, too open).
pub fn show_command(config: Option<&Path>, data_dir: Option<&Path>) -> ExitCode {
    let dir = match resolve_dir(config, data_dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match load_or_create_reporting(&dir) {
        Ok((key, created)) => {
            if created {
                eprintln!(
                    "created a new agent key: {} (register the public key below at the gateway)",
                    key_path(&dir).display()
                );
            }
            println!("{}", public_key_text(&key.verifying_key()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `shopfloor-agent key rotate`: stages the next key and prints its public key, with the
/// steps that follow. The running agent keeps signing with the current key.
pub fn rotate_command(config: Option<&Path>, data_dir: Option<&Path>) -> ExitCode {
    let dir = match resolve_dir(config, data_dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match stage_next(&dir) {
        Ok((key, created)) => {
            let public = public_key_text(&key.verifying_key());
            eprintln!(
                "{} next key: {}\n\
                 1. on the gateway: shopfloor-gateway agents rotate --config FILE --id <agent> \
                 --pubkey {public}\n\
                 2. here: shopfloor-agent key activate {}, then restart the agent",
                if created {
                    "staged a new"
                } else {
                    "already staged"
                },
                next_key_path(&dir).display(),
                match (config, data_dir) {
                    (Some(c), _) => format!("--config {}", c.display()),
                    (_, Some(d)) => format!("--data-dir {}", d.display()),
                    _ => String::new(),
                }
            );
            println!("{public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `shopfloor-agent key activate`: the staged key becomes the agent's key (after the gateway
/// registered it); prints the new public key.
pub fn activate_command(config: Option<&Path>, data_dir: Option<&Path>) -> ExitCode {
    let dir = match resolve_dir(config, data_dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match activate_next(&dir) {
        Ok(key) => {
            eprintln!(
                "activated: {} now holds the new key; restart the agent to sign with it",
                key_path(&dir).display()
            );
            println!("{}", public_key_text(&key.verifying_key()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn resolve_dir(config: Option<&Path>, data_dir: Option<&Path>) -> Result<PathBuf, ExitCode> {
    match (config, data_dir) {
        (Some(_), Some(_)) => {
            eprintln!("error: give either --config or --data-dir, not both");
            Err(ExitCode::from(2))
        }
        (None, None) => {
            eprintln!("error: give --config FILE or --data-dir DIR");
            Err(ExitCode::from(2))
        }
        (None, Some(d)) => Ok(d.to_owned()),
        (Some(c), None) => crate::config::data_dir_of(c).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    #[test]
    fn creates_once_and_loads_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (k1, created) = load_or_create_reporting(&dir).unwrap();
        assert!(created);
        let (k2, created) = load_or_create_reporting(&dir).unwrap();
        assert!(!created);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        assert_eq!(load(&dir).unwrap().to_bytes(), k1.to_bytes());
        let text = fs::read_to_string(key_path(&dir)).unwrap();
        assert!(text.starts_with("shopfloor-agent-key/1\n"));
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 2);
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
        // Two data directories, two different keys.
        let other = load_or_create(&tmp.path().join("other")).unwrap();
        assert_ne!(other.to_bytes(), k1.to_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn modes_0600_and_0700() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        load_or_create(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_path(&dir)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let k = load_or_create(tmp.path()).unwrap();
        let path = key_path(tmp.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(tmp.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Permissions { mode: 0o644, .. }));
        let msg = e.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        // Not replaced: fixing the mode gives the same key back.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(tmp.path()).unwrap().to_bytes(), k.to_bytes());
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = key_path(tmp.path());
        for (content, why) in [
            (&b""[..], "empty file"),
            (b"hello\n", "first line"),
            (b"shopfloor-agent-key/1\n", "missing"),
            (b"shopfloor-agent-key/1\n!!!!\n", "base64"),
            (b"shopfloor-agent-key/1\nAAAA\n", "32 bytes"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            write_private(&path, content);
            let e = load_or_create(tmp.path()).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, IdentityError::Corrupt { .. }), "{msg}");
            assert!(msg.contains(why), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert_eq!(fs::read(&path).unwrap(), content, "file was changed");
        }
    }

    fn write_private(path: &Path, content: &[u8]) {
        fs::write(path, content).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn reads_a_written_seed() {
        let tmp = tempfile::tempdir().unwrap();
        let seed = [7u8; 32];
        write_private(
            &key_path(tmp.path()),
            format!("{KEY_HEADER}\n{}\n", BASE64.encode(seed)).as_bytes(),
        );
        let k = load_or_create(tmp.path()).unwrap();
        assert_eq!(k.to_bytes(), seed);
        assert_eq!(
            public_key_text(&k.verifying_key()),
            "ed25519:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="
        );
    }

    #[test]
    fn rotation_stages_then_activates_the_next_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(stage_next(dir.path()).is_err(), "no current key yet");
        let current = load_or_create(dir.path()).unwrap();
        let (next, created) = stage_next(dir.path()).unwrap();
        assert!(created);
        assert_ne!(next.to_bytes(), current.to_bytes());
        let (again, created) = stage_next(dir.path()).unwrap();
        assert!(!created, "a staged key is kept");
        assert_eq!(again.to_bytes(), next.to_bytes());
        // Staging does not change the key the agent signs with.
        assert_eq!(load(dir.path()).unwrap().to_bytes(), current.to_bytes());
        let active = activate_next(dir.path()).unwrap();
        assert_eq!(active.to_bytes(), next.to_bytes());
        assert_eq!(load(dir.path()).unwrap().to_bytes(), next.to_bytes());
        assert!(!next_key_path(dir.path()).exists());
        assert!(
            activate_next(dir.path()).is_err(),
            "nothing staged any more"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn show_command_exit_codes() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(show_command(None, Some(tmp.path())), ExitCode::SUCCESS);
        assert_eq!(show_command(None, None), ExitCode::from(2));
        let missing = tmp.path().join("missing.toml");
        assert_eq!(show_command(Some(&missing), None), ExitCode::from(2));
        write_private(&key_path(tmp.path()), b"garbage");
        assert_eq!(show_command(None, Some(tmp.path())), ExitCode::from(1));
    }
}
