//! Which admin keys are in force: configured keys, the `PORTICO_ADMIN_KEY` override, or a
//! key generated on first start. Security rules: a key is always required, and a short
//! key never guards a non-loopback listener.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};

use crate::settings::{AdminKey, Role, Settings, ADMIN_KEY_ENV, MIN_PUBLIC_KEY_LEN};

/// File (in `data_dir`) holding the generated key.
pub const GENERATED_KEY_FILE: &str = "admin.key";

#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    #[error("admin.listen {listen} is not a loopback address and key `{name}` is shorter than {MIN_PUBLIC_KEY_LEN} characters; use a longer key or listen on 127.0.0.1")]
    ShortPublicKey { listen: String, name: String },
    #[error("cannot read or write the generated admin key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The keys to enforce, and the generated key file when one was used.
pub struct ResolvedKeys {
    pub keys: Vec<AdminKey>,
    pub generated: Option<PathBuf>,
}

/// Resolves the keys in force. `env_key` is the value of `PORTICO_ADMIN_KEY`, if set.
pub fn resolve(
    settings: &Settings,
    env_key: Option<String>,
) -> Result<ResolvedKeys, AdminKeyError> {
    let mut keys = with_env_override(&settings.admin.keys, env_key.as_deref());
    let mut generated = None;
    if keys.is_empty() {
        let path = settings.data_dir.join(GENERATED_KEY_FILE);
        keys.push(AdminKey {
            name: "admin".into(),
            key: generated_key(&path)?,
            role: Role::Admin,
        });
        generated = Some(path);
    }
    if let Some(name) = short_key(settings, &keys) {
        return Err(AdminKeyError::ShortPublicKey {
            listen: settings.admin.listen.clone(),
            name,
        });
    }
    Ok(ResolvedKeys { keys, generated })
}

/// The name of a key too short for a non-loopback admin listener, if any.
fn short_key(settings: &Settings, keys: &[AdminKey]) -> Option<String> {
    if settings.admin_is_loopback() {
        return None;
    }
    keys.iter()
        .find(|k| k.key.chars().count() < MIN_PUBLIC_KEY_LEN)
        .map(|k| k.name.clone())
}

/// For `portico -t`: the same check startup makes, with the environment override applied
/// and without generating a key file (a generated key is always long enough).
pub fn short_public_key(settings: &Settings, env_key: Option<&str>) -> Option<String> {
    short_key(settings, &with_env_override(&settings.admin.keys, env_key))
}

/// `PORTICO_ADMIN_KEY` replaces the first admin-role key, or adds one.
fn with_env_override(configured: &[AdminKey], env_key: Option<&str>) -> Vec<AdminKey> {
    let mut keys = configured.to_vec();
    if let Some(env_key) = env_key.filter(|k| !k.is_empty()) {
        match keys.iter_mut().find(|k| k.role == Role::Admin) {
            Some(k) => k.key = env_key.to_string(),
            None => keys.push(AdminKey {
                name: "admin".into(),
                key: env_key.to_string(),
                role: Role::Admin,
            }),
        }
    }
    keys
}

/// Reads the generated key, creating it (mode 0600) on first start.
fn generated_key(path: &Path) -> Result<String, AdminKeyError> {
    let io = |source| AdminKeyError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        crate::data_dir::create_private(dir).map_err(io)?;
    }
    let key = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(key.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

/// The environment override, read once at startup.
pub fn env_key() -> Option<String> {
    std::env::var(ADMIN_KEY_ENV).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str, dir: &Path) -> Settings {
        let mut s = Settings::parse(yaml).unwrap();
        s.data_dir = dir.to_path_buf();
        s
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portico-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generates_once_with_mode_0600() {
        let dir = tmp("gen");
        let s = settings("", &dir);
        let a = resolve(&s, None).unwrap();
        let b = resolve(&s, None).unwrap();
        assert_eq!(a.keys[0].key, b.keys[0].key);
        assert_eq!(a.keys[0].key.len(), 32);
        assert_eq!(
            a.generated.as_deref(),
            Some(dir.join("admin.key").as_path())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("admin.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_overrides_and_public_short_key_refused() {
        let dir = tmp("env");
        let s = settings(
            "admin: { keys: [ {name: a, key: configured-key-123, role: admin} ] }",
            &dir,
        );
        let r = resolve(&s, Some("from-env-key-4567".into())).unwrap();
        assert_eq!(r.keys[0].key, "from-env-key-4567");
        assert!(r.generated.is_none());
        let s = settings(
            "admin: { listen: \"0.0.0.0:9180\", keys: [ {name: a, key: short} ] }",
            &dir,
        );
        assert!(matches!(
            resolve(&s, None),
            Err(AdminKeyError::ShortPublicKey { .. })
        ));
        let s = settings(
            "admin: { listen: \"127.0.0.1:9180\", keys: [ {name: a, key: short} ] }",
            &dir,
        );
        assert!(resolve(&s, None).is_ok());
    }
}
