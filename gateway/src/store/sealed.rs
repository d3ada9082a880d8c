//! `data_encryption.keyring`: SSL private keys (`key`, `keys[]`) sealed at rest, in
//! APISIX's scheme, so a store written by either decrypts in the other: AES-128-CBC with
//! the keyring's first key as both key and IV, PKCS#7 padding, base64. Every key of the
//! ring is tried on decrypt (key rotation: put the new key first); a value that is
//! already PEM (`-----...`) is taken as is, as APISIX does.
//!
//! [`SealedBackend`] wraps the durable backend: records are sealed on their way to disk
//! and opened on load, so the rest of the store, the snapshot and the admin API only
//! ever see PEM.

use std::sync::Arc;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde_json::Value;

use super::disk::{DiskError, DiskWrite, HistoryWrite, Loaded, Record};
use super::StoreBackend;
use crate::config::ResourceKind;

type Enc = cbc::Encryptor<aes::Aes128>;
type Dec = cbc::Decryptor<aes::Aes128>;

/// The keys of `data_encryption.keyring`, each 16 bytes.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<[u8; 16]>,
}

impl Keyring {
    /// A ring of 16-character keys; the error names the offending entry.
    pub fn new(keys: &[String]) -> Result<Keyring, String> {
        let mut ring = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let bytes: [u8; 16] = k.as_bytes().try_into().map_err(|_| {
                format!(
                    "data_encryption.keyring[{i}]: must be 16 bytes long, is {}",
                    k.len()
                )
            })?;
            ring.push(bytes);
        }
        if ring.is_empty() {
            return Err("data_encryption.keyring: at least one key is required".to_string());
        }
        Ok(Keyring { keys: ring })
    }

    /// Seals `plain` with the first key.
    pub fn seal(&self, plain: &str) -> String {
        let key = &self.keys[0];
        let sealed =
            Enc::new(key.into(), key.into()).encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }

    /// Opens a sealed value with the first key that works; PEM passes through.
    pub fn open(&self, text: &str) -> Option<String> {
        if text.starts_with("---") {
            return Some(text.to_string());
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        self.keys.iter().find_map(|key| {
            let plain = Dec::new(key.into(), key.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&data)
                .ok()?;
            String::from_utf8(plain).ok()
        })
    }
}

/// Applies `f` to an SSL object's private keys (`key`, each of `keys`).
impl Keyring {
    /// Seals the private keys (`key`, `keys[]`) of an SSL object that are PEM.
    pub fn seal_ssl(&self, value: &mut Value) {
        map_keys(value, |k| k.starts_with("---").then(|| self.seal(k)));
    }

    /// Opens the sealed private keys of an SSL object; false when one does not
    /// decrypt with any key of the ring (it is left as it was).
    pub fn open_ssl(&self, value: &mut Value) -> bool {
        let mut all = true;
        map_keys(value, |k| {
            let opened = self.open(k);
            all &= opened.is_some();
            opened
        });
        all
    }
}

fn map_keys(value: &mut Value, mut f: impl FnMut(&str) -> Option<String>) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    if let Some(Value::String(k)) = obj.get_mut("key") {
        if let Some(new) = f(k) {
            *k = new;
        }
    }
    if let Some(Value::Array(keys)) = obj.get_mut("keys") {
        for k in keys.iter_mut() {
            if let Value::String(s) = k {
                if let Some(new) = f(s) {
                    *s = new;
                }
            }
        }
    }
}

/// A backend whose SSL records hold sealed private keys.
pub struct SealedBackend<B> {
    inner: B,
    keyring: Keyring,
}

impl<B> SealedBackend<B> {
    pub fn new(inner: B, keyring: Keyring) -> SealedBackend<B> {
        SealedBackend { inner, keyring }
    }

    fn sealed(&self, record: &Record) -> Record {
        let mut value = record.value.clone();
        map_keys(&mut value, |k| {
            k.starts_with("---").then(|| self.keyring.seal(k))
        });
        Record {
            value,
            created_index: record.created_index,
            modified_index: record.modified_index,
        }
    }
}

impl<B: StoreBackend> StoreBackend for SealedBackend<B> {
    fn load(&self) -> Result<Loaded, DiskError> {
        let mut loaded = self.inner.load()?;
        for (kind, id, record) in &mut loaded.records {
            if *kind != ResourceKind::Ssls {
                continue;
            }
            map_keys(&mut record.value, |k| {
                let opened = self.keyring.open(k);
                if opened.is_none() {
                    tracing::error!(
                        key = %kind.key(id),
                        "a private key does not decrypt with any key of data_encryption.keyring"
                    );
                }
                opened
            });
        }
        Ok(loaded)
    }

    fn write(
        &self,
        write: DiskWrite<'_>,
        revision: u64,
        history: Option<HistoryWrite<'_>>,
    ) -> Result<(), DiskError> {
        // The history keeps SSL objects' values too: their keys are sealed there as well
        // (a rollback across an SSL change then fails validation instead of leaking).
        let sealed_entry = history.as_ref().map(|h| {
            let mut entry = h.entry.clone();
            for change in &mut entry.changes {
                if change.key.starts_with("/apisix/ssls/") {
                    for v in [&mut change.before, &mut change.after]
                        .into_iter()
                        .flatten()
                    {
                        // Copy-on-write: only SSL objects' values are copied to seal.
                        map_keys(Arc::make_mut(v), |k| {
                            k.starts_with("---").then(|| self.keyring.seal(k))
                        });
                    }
                }
            }
            (entry, h.keep)
        });
        let history = sealed_entry
            .as_ref()
            .map(|(entry, keep)| HistoryWrite { entry, keep: *keep });
        match write {
            DiskWrite::Put { kind, id, record } if kind == ResourceKind::Ssls => {
                let sealed = self.sealed(record);
                self.inner.write(
                    DiskWrite::Put {
                        kind,
                        id,
                        record: &sealed,
                    },
                    revision,
                    history,
                )
            }
            DiskWrite::ReplaceAll(items) => {
                let sealed: Vec<Option<Record>> = items
                    .iter()
                    .map(|(kind, _, r)| (*kind == ResourceKind::Ssls).then(|| self.sealed(r)))
                    .collect();
                let items = items
                    .iter()
                    .zip(&sealed)
                    .map(|((kind, id, r), s)| (*kind, *id, s.as_ref().unwrap_or(r)))
                    .collect();
                self.inner
                    .write(DiskWrite::ReplaceAll(items), revision, history)
            }
            other => self.inner.write(other, revision, history),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
    /// `PEM` sealed by `openssl enc -aes-128-cbc -K <key> -iv <key> -base64` with the key
    /// `0123456789abcdef`: what APISIX writes for that keyring.
    const APISIX_SEALED: &str =
        "0N/zQhs+X4F42X+ZvYEacm7nfc9lL4E9TONAgNIRxLUINbLbM59MvQW9/fe8Y9Vwn1h6t8Gdbbz1jxW3n+xNBg==";

    #[test]
    fn seals_as_apisix_does_and_tries_every_key() {
        let ring = Keyring::new(&["0123456789abcdef".to_string()]).unwrap();
        assert_eq!(ring.seal(PEM), APISIX_SEALED);
        assert_eq!(ring.open(APISIX_SEALED).as_deref(), Some(PEM));
        assert_eq!(ring.open(PEM).as_deref(), Some(PEM), "PEM passes through");

        let rotated = Keyring::new(&[
            "fedcba9876543210".to_string(),
            "0123456789abcdef".to_string(),
        ])
        .unwrap();
        assert_eq!(rotated.open(APISIX_SEALED).as_deref(), Some(PEM));
        assert_ne!(rotated.seal(PEM), APISIX_SEALED, "the first key seals");
        let other = Keyring::new(&["fedcba9876543210".to_string()]).unwrap();
        assert_eq!(other.open(APISIX_SEALED), None);
    }

    #[test]
    fn keys_must_be_16_bytes() {
        let e = Keyring::new(&["0123456789abcdef".to_string(), "short".to_string()])
            .err()
            .unwrap();
        assert!(e.starts_with("data_encryption.keyring[1]"), "{e}");
        assert!(Keyring::new(&[]).is_err());
    }
}
