//! APISIX's `jwt-auth` (priority 2510, rewrite): a JWT from header `header`
//! (`authorization`, an optional `Bearer ` prefix), else query argument `query` (`jwt`),
//! else cookie `cookie` (`jwt`), whose `key` claim names a consumer's `jwt-auth`
//! credential; its signature is checked with that credential (`HS256` (default) and
//! `HS512` with `secret`, `RS256` and `ES256` with `public_key`, PEM), then `exp` and
//! `nbf` with [`CLOCK_SKEW_SECS`] plus the consumer's `lifetime_grace_period`.
//! Every failure is a 401 with APISIX's message.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::HeaderName;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "jwt-auth",
    priority: 2510,
    phases: &[Phase::Rewrite],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

/// Seconds a token may be past `exp` or before `nbf` (clocks differ).
pub const CLOCK_SKEW_SECS: u64 = 5;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "header": {"type": "string", "default": "authorization"},
            "query": {"type": "string", "default": "jwt"},
            "cookie": {"type": "string", "default": "jwt"},
            "hide_credentials": {"type": "boolean", "default": false},
            "key_claim_name": {"type": "string", "default": "key"}
        },
        "consumer_schema": {
            "type": "object",
            "properties": {
                "key": {"type": "string", "minLength": 1},
                "secret": {"type": "string"},
                "public_key": {"type": "string"},
                "algorithm": {"type": "string", "enum": ["HS256", "HS512", "RS256", "ES256"], "default": "HS256"},
                "exp": {"type": "integer", "minimum": 1, "default": 86400},
                "base64_secret": {"type": "boolean", "default": false},
                "lifetime_grace_period": {"type": "integer", "minimum": 0, "default": 0}
            },
            "required": ["key"]
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_jwt")]
    query: String,
    #[serde(default = "default_jwt")]
    cookie: String,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "default_key_claim")]
    key_claim_name: String,
}

fn default_header() -> String {
    "authorization".to_string()
}
fn default_jwt() -> String {
    "jwt".to_string()
}
fn default_key_claim() -> String {
    "key".to_string()
}
fn default_exp() -> u64 {
    86400
}

/// The signature algorithms this build verifies.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    HS256,
    HS512,
    RS256,
    ES256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialConf {
    key: String,
    secret: Option<String>,
    public_key: Option<String>,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default = "default_exp")]
    exp: u64,
    #[serde(default)]
    base64_secret: bool,
    #[serde(default)]
    lifetime_grace_period: u64,
}

/// What verifies a consumer's tokens, made at apply time.
enum Verifier {
    Hmac(ring::hmac::Key),
    /// `RS256`: the PKCS#1 `RSAPublicKey` DER; `ES256`: the uncompressed point.
    PublicKey(Vec<u8>),
}

/// A consumer's `jwt-auth` credential.
pub struct JwtCredential {
    algorithm: Algorithm,
    verifier: Verifier,
    grace: u64,
}

impl std::fmt::Debug for JwtCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtCredential({})", self.algorithm.name())
    }
}

/// Checks a consumer's `jwt-auth` configuration: its `key` and what verifies its tokens.
pub fn credential(conf: &Value) -> Result<(String, JwtCredential), String> {
    let c: CredentialConf = serde_json::from_value(conf.clone()).map_err(|e| e.to_string())?;
    if c.key.is_empty() {
        return Err("key: must not be empty".to_string());
    }
    if c.exp == 0 {
        return Err("exp: must be at least 1".to_string());
    }
    let verifier = match c.algorithm {
        Algorithm::HS256 | Algorithm::HS512 => {
            let secret = c
                .secret
                .filter(|s| !s.is_empty())
                .ok_or("secret: is required for HS256 and HS512")?;
            let bytes = if c.base64_secret {
                base64::engine::general_purpose::STANDARD
                    .decode(secret.trim())
                    .map_err(|e| format!("secret: not base64 ({e})"))?
            } else {
                secret.into_bytes()
            };
            let alg = if c.algorithm == Algorithm::HS256 {
                ring::hmac::HMAC_SHA256
            } else {
                ring::hmac::HMAC_SHA512
            };
            Verifier::Hmac(ring::hmac::Key::new(alg, &bytes))
        }
        Algorithm::RS256 | Algorithm::ES256 => {
            let pem = c
                .public_key
                .ok_or("public_key: is required for RS256 and ES256")?;
            Verifier::PublicKey(public_key_bits(&pem).map_err(|m| format!("public_key: {m}"))?)
        }
    };
    Ok((
        c.key,
        JwtCredential {
            algorithm: c.algorithm,
            verifier,
            grace: c.lifetime_grace_period,
        },
    ))
}

/// The key bits of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY`
/// (PKCS#1, returned as is).
fn public_key_bits(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("not a PEM key ({e})"))?;
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        return Ok(der);
    }
    // SEQUENCE { SEQUENCE algorithm, BIT STRING key }
    let (outer, _) = der_element(&der, 0x30).ok_or("not a SubjectPublicKeyInfo")?;
    let (_, rest) = der_element(outer, 0x30).ok_or("no algorithm identifier")?;
    let (bits, _) = der_element(rest, 0x03).ok_or("no public key bit string")?;
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err("malformed public key bit string".to_string()),
    }
}

/// The contents of the DER element with `tag` at the start of `data`, and what follows.
fn der_element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = data.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

struct JwtAuth {
    header: HeaderName,
    query: String,
    cookie: String,
    hide_credentials: bool,
    key_claim: String,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let header = HeaderName::from_bytes(conf.header.as_bytes())
        .map_err(|_| format!("header: `{}` is not a header name", conf.header))?;
    Ok(Arc::new(JwtAuth {
        header,
        query: conf.query,
        cookie: conf.cookie,
        hide_credentials: conf.hide_credentials,
        key_claim: conf.key_claim_name,
    }))
}

/// Where the token was found.
enum Source {
    Header,
    Query,
    Cookie,
}

impl JwtAuth {
    fn find(&self, req: &RequestHeader) -> Option<(String, Source)> {
        if let Some(v) = req.headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            let token = match v.get(..7) {
                Some(p) if p.eq_ignore_ascii_case("bearer ") => &v[7..],
                _ => v,
            };
            return Some((token.trim().to_string(), Source::Header));
        }
        if let Some(q) = req.uri.query() {
            let found = q
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == self.query);
            if let Some((_, v)) = found {
                return Some((crate::vars::percent_decode(v).into_owned(), Source::Query));
            }
        }
        let cookies = req.headers.get_all(http::header::COOKIE);
        for header in cookies.iter().filter_map(|v| v.to_str().ok()) {
            for pair in header.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == self.cookie {
                        return Some((v.to_string(), Source::Cookie));
                    }
                }
            }
        }
        None
    }
}

/// A decoded token: header `alg`, the claims, the signed part and the signature.
struct Token {
    alg: String,
    claims: Value,
    signed: String,
    signature: Vec<u8>,
}

fn decode(token: &str) -> Option<Token> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&b64.decode(p).ok()?).ok()?;
    Some(Token {
        alg: header.get("alg")?.as_str()?.to_string(),
        claims,
        signed: format!("{h}.{p}"),
        signature: b64.decode(s).ok()?,
    })
}

/// Whether `token`'s signature verifies with `cred`.
fn signature_ok(cred: &JwtCredential, token: &Token) -> bool {
    if token.alg != cred.algorithm.name() {
        return false;
    }
    let msg = token.signed.as_bytes();
    match (&cred.verifier, cred.algorithm) {
        (Verifier::Hmac(key), _) => ring::hmac::verify(key, msg, &token.signature).is_ok(),
        (Verifier::PublicKey(bits), Algorithm::RS256) => ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            bits,
        )
        .verify(msg, &token.signature)
        .is_ok(),
        (Verifier::PublicKey(bits), _) => {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, bits)
                .verify(msg, &token.signature)
                .is_ok()
        }
    }
}

/// Whether `exp` and `nbf` (when present) admit the token at `now`.
fn times_ok(claims: &Value, now: u64, slack: u64) -> bool {
    let num = |name: &str| claims.get(name).and_then(Value::as_f64);
    let exp_ok = num("exp").is_none_or(|exp| (now as f64) < exp + slack as f64);
    let nbf_ok = num("nbf").is_none_or(|nbf| nbf <= (now + slack) as f64);
    exp_ok && nbf_ok
}

#[async_trait::async_trait]
impl Plugin for JwtAuth {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let Some((raw, source)) = self.find(req) else {
            return super::unauthorized("Missing JWT token in request");
        };
        let Some(token) = decode(&raw) else {
            return super::unauthorized("JWT token invalid");
        };
        let Some(key) = token.claims.get(&self.key_claim).and_then(Value::as_str) else {
            return super::unauthorized("missing user key in JWT token");
        };
        let Some((cred, consumer)) = cx.consumers.jwt_owner(key) else {
            return super::unauthorized("Invalid user key in JWT token");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if !signature_ok(cred, &token)
            || !times_ok(&token.claims, now, CLOCK_SKEW_SECS + cred.grace)
        {
            return super::unauthorized("failed to verify jwt");
        }
        let consumer = Arc::clone(consumer);
        if self.hide_credentials {
            match source {
                Source::Header => {
                    req.remove_header(&self.header);
                }
                Source::Query => super::remove_query_arg(req, &self.query),
                Source::Cookie => {}
            }
        }
        super::attach(req, cx, &consumer);
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{ConsumerIndex, ConsumerInput};
    use crate::native::test_support::{block_on, build as build_conf, TestRequest};

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    fn hs_token(alg: &str, secret: &[u8], claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let ring_alg = if alg == "HS256" {
            ring::hmac::HMAC_SHA256
        } else {
            ring::hmac::HMAC_SHA512
        };
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring_alg, secret), signed.as_bytes());
        format!("{signed}.{}", b64(tag.as_ref()))
    }

    fn run(consumer_conf: Value, auth: &str) -> (NativeOutcome, Option<String>) {
        let plugins = json!({ "jwt-auth": consumer_conf });
        let plugin = build_conf(&PLUGIN, json!({})).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        r.consumers = ConsumerIndex::build([ConsumerInput {
            username: "jack",
            group_id: None,
            plugins: plugins.as_object(),
        }])
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("authorization", auth).unwrap();
        let out = block_on(plugin.rewrite(&mut req, &mut r.cx()));
        (out, r.consumer.map(|c| c.username.to_string()))
    }

    fn message(out: &NativeOutcome) -> String {
        match out {
            NativeOutcome::Respond { status: 401, body } => serde_json::from_slice::<Value>(body)
                .unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string(),
            other => panic!("{other:?}"),
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn hs256_and_hs512_tokens() {
        let conf = json!({"key": "user-key", "secret": "my-secret-key"});
        let token = hs_token(
            "HS256",
            b"my-secret-key",
            json!({"key": "user-key", "exp": now() + 60}),
        );
        let (out, who) = run(conf.clone(), &format!("Bearer {token}"));
        assert_eq!(out, NativeOutcome::Continue);
        assert_eq!(who.as_deref(), Some("jack"));

        let expired = hs_token(
            "HS256",
            b"my-secret-key",
            json!({"key": "user-key", "exp": now() - 60}),
        );
        assert_eq!(
            message(&run(conf.clone(), &expired).0),
            "failed to verify jwt"
        );
        let forged = hs_token("HS256", b"other", json!({"key": "user-key"}));
        assert_eq!(
            message(&run(conf.clone(), &forged).0),
            "failed to verify jwt"
        );
        let later = hs_token(
            "HS256",
            b"my-secret-key",
            json!({"key": "user-key", "nbf": now() + 600}),
        );
        assert_eq!(
            message(&run(conf.clone(), &later).0),
            "failed to verify jwt"
        );
        let stranger = hs_token("HS256", b"my-secret-key", json!({"key": "nobody"}));
        assert_eq!(
            message(&run(conf.clone(), &stranger).0),
            "Invalid user key in JWT token"
        );
        assert_eq!(message(&run(conf.clone(), "abc").0), "JWT token invalid");

        let conf512 = json!({"key": "user-key", "secret": "s512", "algorithm": "HS512"});
        let token = hs_token("HS512", b"s512", json!({"key": "user-key"}));
        assert_eq!(run(conf512.clone(), &token).0, NativeOutcome::Continue);
        let wrong_alg = hs_token("HS256", b"s512", json!({"key": "user-key"}));
        assert_eq!(message(&run(conf512, &wrong_alg).0), "failed to verify jwt");
    }

    #[test]
    fn es256_tokens_verify_with_the_pem_public_key() {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // SubjectPublicKeyInfo for a P-256 key: the fixed prefix, then the point.
        let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        );
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","typ":"JWT"}"#),
            b64(json!({"key": "ec-key"}).to_string().as_bytes())
        );
        let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
        let token = format!("{signed}.{}", b64(sig.as_ref()));
        let conf = json!({"key": "ec-key", "public_key": pem, "algorithm": "ES256"});
        assert_eq!(run(conf.clone(), &token).0, NativeOutcome::Continue);
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(matches!(
            run(conf, &tampered).0,
            NativeOutcome::Respond { status: 401, .. }
        ));
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn credentials_are_checked() {
        assert!(
            credential(&json!({"key": "k"})).is_err(),
            "HS256 needs a secret"
        );
        assert!(credential(&json!({"key": "k", "algorithm": "RS256"})).is_err());
        assert!(credential(&json!({"key": "k", "secret": "s", "algorithm": "PS256"})).is_err());
        assert!(credential(&json!({"key": "k", "secret": "s"})).is_ok());
        assert!(credential(&json!({"key": "k", "secret": "!!", "base64_secret": true})).is_err());
    }
}
