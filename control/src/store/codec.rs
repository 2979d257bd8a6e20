//! How objects are laid down in the datastore: JSON, with `secrets` encrypted (AES-256-GCM).
//!
//! Encrypted values carry a prefix naming the scheme and key, in the manner of Kubernetes'
//! `EncryptionConfiguration` (`k8s:enc:aesgcm:v1:<key>:`), followed by the 12-byte nonce and the
//! ciphertext. The key name makes a later key rotation possible without guessing.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::Value;

use super::{Error, Key, MAX_OBJECT_BYTES, Object, Result};

/// The resource whose values are encrypted at rest.
pub const SECRETS_RESOURCE: &str = "secrets";

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:bosun1:";
const NONCE_LEN: usize = 12;

/// The secrets-encryption key (AES-256-GCM).
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            aead: Aes256Gcm::new(key.into()),
        }
    }

    /// A fresh random 256-bit key.
    pub fn generate_key() -> [u8; 32] {
        Aes256Gcm::generate_key(OsRng).into()
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let ciphertext = self
            .aead
            .encrypt(&nonce, plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(PREFIX.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value written by [`Cipher::encrypt`]; `None` if it is not one of ours or
    /// fails authentication.
    pub fn decrypt(&self, data: &[u8]) -> Option<Vec<u8>> {
        let rest = data.strip_prefix(PREFIX)?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.aead.decrypt(Nonce::from_slice(nonce), ciphertext).ok()
    }

    pub fn is_encrypted(data: &[u8]) -> bool {
        data.starts_with(PREFIX)
    }
}

pub(crate) struct Codec {
    cipher: Cipher,
}

impl Codec {
    pub fn new(cipher: Cipher) -> Self {
        Self { cipher }
    }

    /// Checks and serializes a value for `key`. The stored form never carries a
    /// resourceVersion: that is the row's revision, filled in on every read.
    pub fn encode(&self, key: &Key, mut value: Value) -> Result<Vec<u8>> {
        let Some(object) = value.as_object_mut() else {
            return Err(Error::InvalidValue {
                key: key.clone(),
                reason: "an object must be a JSON object".into(),
            });
        };
        if let Some(metadata) = object.get_mut("metadata") {
            let Some(metadata) = metadata.as_object_mut() else {
                return Err(Error::InvalidValue {
                    key: key.clone(),
                    reason: "metadata must be a JSON object".into(),
                });
            };
            metadata.remove("resourceVersion");
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::InvalidValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if bytes.len() > MAX_OBJECT_BYTES {
            return Err(Error::TooLarge {
                key: key.clone(),
                size: bytes.len(),
            });
        }
        Ok(if key.resource == SECRETS_RESOURCE {
            self.cipher.encrypt(&bytes)
        } else {
            bytes
        })
    }

    /// Parses a stored value and stamps `metadata.resourceVersion` with `revision`.
    pub fn decode(
        &self,
        key: &Key,
        data: &[u8],
        revision: i64,
        create_revision: i64,
    ) -> Result<Object> {
        let mut value = self.parse(key, data)?;
        set_resource_version(&mut value, revision);
        Ok(Object {
            key: key.clone(),
            revision,
            create_revision,
            value,
        })
    }

    /// Parses a stored value as it is (no resourceVersion stamped).
    pub fn parse(&self, key: &Key, data: &[u8]) -> Result<Value> {
        let corrupt = |reason: String| Error::Corrupt {
            key: key.clone(),
            reason,
        };
        if Cipher::is_encrypted(data) {
            let plain = self
                .cipher
                .decrypt(data)
                .ok_or_else(|| corrupt("cannot decrypt: wrong secrets-encryption key?".into()))?;
            serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))
        } else {
            serde_json::from_slice(data).map_err(|e| corrupt(e.to_string()))
        }
    }
}

fn set_resource_version(value: &mut Value, revision: i64) {
    if let Some(object) = value.as_object_mut() {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codec() -> Codec {
        Codec::new(Cipher::new(&Cipher::generate_key()))
    }

    #[test]
    fn secrets_are_encrypted_and_round_trip() {
        let c = codec();
        let key = Key::new("secrets", "default", "db");
        let value = json!({"metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}});
        let stored = c.encode(&key, value.clone()).unwrap();
        assert!(Cipher::is_encrypted(&stored));
        assert!(!String::from_utf8_lossy(&stored).contains("aHVudGVyMg"));
        let object = c.decode(&key, &stored, 7, 7).unwrap();
        assert_eq!(object.value["data"], value["data"]);
        assert_eq!(object.value["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn other_resources_are_plain_json_without_resource_version() {
        let c = codec();
        let key = Key::new("configmaps", "default", "c");
        let stored = c
            .encode(
                &key,
                json!({"metadata": {"name": "c", "resourceVersion": "3"}}),
            )
            .unwrap();
        let text = String::from_utf8(stored).unwrap();
        assert!(!text.contains("resourceVersion"), "{text}");
    }

    #[test]
    fn a_wrong_key_cannot_decrypt() {
        let key = Key::new("secrets", "default", "db");
        let stored = codec().encode(&key, json!({"data": {}})).unwrap();
        assert!(matches!(
            codec().decode(&key, &stored, 1, 1),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn rejects_non_objects_and_oversized_values() {
        let c = codec();
        let key = Key::new("configmaps", "default", "c");
        assert!(matches!(
            c.encode(&key, json!([1, 2])),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(
            c.encode(&key, json!({"metadata": "x"})),
            Err(Error::InvalidValue { .. })
        ));
        let big = "x".repeat(MAX_OBJECT_BYTES);
        assert!(matches!(
            c.encode(&key, json!({"data": {"big": big}})),
            Err(Error::TooLarge { .. })
        ));
    }
}
