//! Consumers as requests see them: who a request authenticated as, and the credential
//! indexes the auth plugins look callers up in. The gateway builds one
//! [`ConsumerIndex`] per snapshot from the `consumers` resources (at apply time, where a
//! duplicate key is an error naming the consumer); auth plugins read it through
//! [`crate::NativeCtx::consumers`], so an instance reused across snapshots always sees
//! the current consumers.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::native::auth::jwt_auth::JwtCredential;

/// One consumer (APISIX `consumers/{username}`), as the request path needs it.
#[derive(Debug)]
pub struct Consumer {
    pub username: Arc<str>,
    pub group_id: Option<Arc<str>>,
}

/// Names of the plugins whose consumer-side configuration is a credential, not a plugin
/// that runs for the consumer's requests.
pub const AUTH_PLUGINS: [&str; 3] = ["key-auth", "basic-auth", "jwt-auth"];

/// Whether `name` is an authentication plugin (its consumer configuration is a
/// credential).
pub fn is_auth_plugin(name: &str) -> bool {
    AUTH_PLUGINS.contains(&name)
}

/// A `key-auth` key and its consumer.
type KeyCredential = (Box<[u8]>, Arc<Consumer>);

/// A `basic-auth` credential.
#[derive(Debug)]
pub struct BasicCredential {
    pub password: Box<[u8]>,
    pub consumer: Arc<Consumer>,
}

/// Every consumer and credential of one snapshot, indexed for the auth plugins.
#[derive(Debug, Default)]
pub struct ConsumerIndex {
    by_name: HashMap<Arc<str>, Arc<Consumer>>,
    /// key-auth: a keyed hash of the key → the keys with that hash and their consumers.
    /// The lookup goes by hash; the key bytes are then compared in constant time.
    key_auth: HashMap<u64, Vec<KeyCredential>>,
    key_hasher: RandomState,
    /// basic-auth: username → password and consumer.
    basic_auth: HashMap<String, BasicCredential>,
    /// jwt-auth: the token's key claim → what verifies its tokens, and the consumer.
    jwt_auth: HashMap<String, (JwtCredential, Arc<Consumer>)>,
}

/// What one consumer object contributes to the index.
pub struct ConsumerInput<'a> {
    pub username: &'a str,
    pub group_id: Option<&'a str>,
    pub plugins: Option<&'a Map<String, Value>>,
}

impl ConsumerIndex {
    /// Builds the index. Errors are `(path, message)` with paths relative to
    /// `consumers[id=NAME]`'s object; a credential shared by two consumers is an error
    /// on the second one.
    pub fn build<'a>(
        consumers: impl IntoIterator<Item = ConsumerInput<'a>>,
    ) -> Result<ConsumerIndex, Vec<(String, String)>> {
        let mut index = ConsumerIndex::default();
        let mut errors = Vec::new();
        for input in consumers {
            let consumer = Arc::new(Consumer {
                username: Arc::from(input.username),
                group_id: input.group_id.map(Arc::from),
            });
            let at = |field: &str| format!("consumers[id={}].plugins.{field}", input.username);
            for (name, conf) in input.plugins.into_iter().flatten() {
                match name.as_str() {
                    "key-auth" => match crate::native::auth::key_auth::credential(conf) {
                        Ok(key) => {
                            if let Some(other) = index.key_owner(key.as_bytes()) {
                                errors.push((
                                    at("key-auth.key"),
                                    format!(
                                        "duplicate key: consumer `{}` already has this key",
                                        other.username
                                    ),
                                ));
                            } else {
                                let h = index.key_hasher.hash_one(key.as_bytes());
                                index.key_auth.entry(h).or_default().push((
                                    key.into_bytes().into_boxed_slice(),
                                    Arc::clone(&consumer),
                                ));
                            }
                        }
                        Err(m) => errors.push((at("key-auth"), m)),
                    },
                    "basic-auth" => match crate::native::auth::basic_auth::credential(conf) {
                        Ok((user, password)) => {
                            if let Some(other) = index.basic_auth.get(&user) {
                                errors.push((
                                    at("basic-auth.username"),
                                    format!(
                                        "duplicate username: consumer `{}` already uses `{user}`",
                                        other.consumer.username
                                    ),
                                ));
                            } else {
                                index.basic_auth.insert(
                                    user,
                                    BasicCredential {
                                        password: password.into_bytes().into_boxed_slice(),
                                        consumer: Arc::clone(&consumer),
                                    },
                                );
                            }
                        }
                        Err(m) => errors.push((at("basic-auth"), m)),
                    },
                    "jwt-auth" => match crate::native::auth::jwt_auth::credential(conf) {
                        Ok((key, cred)) => {
                            if let Some((_, other)) = index.jwt_auth.get(&key) {
                                errors.push((
                                    at("jwt-auth.key"),
                                    format!(
                                        "duplicate key: consumer `{}` already has this key",
                                        other.username
                                    ),
                                ));
                            } else {
                                index.jwt_auth.insert(key, (cred, Arc::clone(&consumer)));
                            }
                        }
                        Err(m) => errors.push((at("jwt-auth"), m)),
                    },
                    _ => {}
                }
            }
            index
                .by_name
                .insert(Arc::clone(&consumer.username), consumer);
        }
        if errors.is_empty() {
            Ok(index)
        } else {
            Err(errors)
        }
    }

    /// The consumer called `username`.
    pub fn get(&self, username: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(username)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The consumer whose key-auth key is `key`: one hash lookup, then a constant-time
    /// comparison of the key bytes with each key of that hash.
    pub fn key_owner(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let h = self.key_hasher.hash_one(key);
        let mut found = None;
        for (k, c) in self.key_auth.get(&h)? {
            if constant_time_eq(k, key) {
                found = Some(c);
            }
        }
        found
    }

    /// The jwt-auth credential whose key is `key`, and its consumer.
    pub fn jwt_owner(&self, key: &str) -> Option<(&JwtCredential, &Arc<Consumer>)> {
        self.jwt_auth.get(key).map(|(c, who)| (c, who))
    }

    /// The consumer whose basic-auth credential is `user`/`password` (the password
    /// compared in constant time).
    pub fn basic_owner(&self, user: &str, password: &[u8]) -> Option<&Arc<Consumer>> {
        let cred = self.basic_auth.get(user)?;
        constant_time_eq(&cred.password, password).then_some(&cred.consumer)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input<'a>(name: &'a str, plugins: &'a Value) -> ConsumerInput<'a> {
        ConsumerInput {
            username: name,
            group_id: None,
            plugins: plugins.as_object(),
        }
    }

    #[test]
    fn keys_find_their_consumer() {
        let a = json!({"key-auth": {"key": "auth-one"}});
        let b = json!({"key-auth": {"key": "auth-two"}, "basic-auth": {"username": "b", "password": "pw"}});
        let idx = ConsumerIndex::build([input("jack", &a), input("rose", &b)]).unwrap();
        assert_eq!(&*idx.key_owner(b"auth-one").unwrap().username, "jack");
        assert_eq!(&*idx.key_owner(b"auth-two").unwrap().username, "rose");
        assert!(idx.key_owner(b"auth-tw").is_none());
        assert_eq!(&*idx.basic_owner("b", b"pw").unwrap().username, "rose");
        assert!(idx.basic_owner("b", b"px").is_none());
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn a_duplicate_key_names_the_consumer() {
        let a = json!({"key-auth": {"key": "same"}});
        let errs = ConsumerIndex::build([input("jack", &a), input("rose", &a)]).unwrap_err();
        assert_eq!(errs[0].0, "consumers[id=rose].plugins.key-auth.key");
        assert!(errs[0].1.contains("`jack`"), "{errs:?}");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
