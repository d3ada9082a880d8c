//! The lua-resty-string modules OpenResty code requires everywhere, built in with their
//! documented API: `resty.md5`, `resty.sha1`, `resty.sha256`, `resty.sha384`,
//! `resty.sha512` (`local o = sha:new(); o:update(s); o:final(); o:reset()`),
//! `resty.string` (`to_hex`, `atoi`) and `resty.random` (`bytes(n, strong)`).

use md5::{Digest, Md5};
use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use ring::rand::SecureRandom;
use sha1::Sha1;

/// One running digest.
#[derive(Clone)]
enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Ring(ring::digest::Context),
}

/// The kinds `resty.*` provides.
#[derive(Clone, Copy)]
enum Kind {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Kind {
    fn fresh(self) -> Hasher {
        match self {
            Kind::Md5 => Hasher::Md5(Md5::new()),
            Kind::Sha1 => Hasher::Sha1(Sha1::new()),
            Kind::Sha256 => Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA256)),
            Kind::Sha384 => Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA384)),
            Kind::Sha512 => Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA512)),
        }
    }
}

/// The object `new()` returns.
struct DigestObject {
    kind: Kind,
    state: Hasher,
}

impl UserData for DigestObject {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("update", |lua, this, s: Value| {
            let data = super::arg_bytes(lua, &s, "update", 1, false)?;
            match &mut this.state {
                Hasher::Md5(h) => h.update(&data),
                Hasher::Sha1(h) => h.update(&data),
                Hasher::Ring(h) => h.update(&data),
            }
            Ok(true)
        });
        // The digest of what was fed so far (binary); the object keeps its state until
        // `reset`, as lua-resty-string's callers expect to reset before reuse.
        m.add_method("final", |lua, this, ()| {
            let out: Vec<u8> = match this.state.clone() {
                Hasher::Md5(h) => h.finalize().to_vec(),
                Hasher::Sha1(h) => h.finalize().to_vec(),
                Hasher::Ring(h) => h.finish().as_ref().to_vec(),
            };
            lua.create_string(out)
        });
        m.add_method_mut("reset", |_, this, ()| {
            this.state = this.kind.fresh();
            Ok(true)
        });
    }
}

fn digest_module(lua: &Lua, kind: Kind) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    // `sha:new()` and `sha.new()` both work: the arguments are ignored.
    m.raw_set(
        "new",
        lua.create_function(move |_, _: mlua::MultiValue| {
            Ok(DigestObject {
                kind,
                state: kind.fresh(),
            })
        })?,
    )?;
    m.raw_set("_VERSION", "0.16")?;
    Ok(m)
}

/// C `atoi`: leading blanks, an optional sign, digits; 0 when there are none.
fn atoi(s: &[u8]) -> f64 {
    let mut it = s.iter().skip_while(|b| b.is_ascii_whitespace()).peekable();
    let neg = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    for b in it.take_while(|b| b.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    (if neg { -n } else { n }) as f64
}

fn string_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.raw_set(
        "to_hex",
        lua.create_function(|lua, s: Value| {
            let data = super::arg_bytes(lua, &s, "to_hex", 1, false)?;
            Ok(super::digest::hex(&data))
        })?,
    )?;
    m.raw_set(
        "atoi",
        lua.create_function(|lua, s: Value| {
            let data = super::arg_bytes(lua, &s, "atoi", 1, false)?;
            Ok(atoi(&data))
        })?,
    )?;
    m.raw_set("_VERSION", "0.16")?;
    Ok(m)
}

/// Largest `resty.random.bytes` request (the memory cap does not see Rust buffers).
const MAX_RANDOM_BYTES: usize = 16 * 1024 * 1024;

fn random_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    let rng = ring::rand::SystemRandom::new();
    // Both modes read the operating system's CSPRNG: "strong" costs nothing more here.
    m.raw_set(
        "bytes",
        lua.create_function(move |lua, (len, _strong): (f64, Option<bool>)| {
            if !(0.0..=MAX_RANDOM_BYTES as f64).contains(&len) {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'bytes' (0 to {MAX_RANDOM_BYTES} expected)"
                )));
            }
            let mut buf = vec![0u8; len as usize];
            match rng.fill(&mut buf) {
                Ok(()) => Ok(Value::String(lua.create_string(&buf)?)),
                Err(_) => Ok(Value::Nil),
            }
        })?,
    )?;
    Ok(m)
}

/// The module `name`, when it is one of these.
pub(super) fn create_module(lua: &Lua, name: &str) -> mlua::Result<Option<Table>> {
    let kind = match name {
        "resty.md5" => Kind::Md5,
        "resty.sha1" => Kind::Sha1,
        "resty.sha256" => Kind::Sha256,
        "resty.sha384" => Kind::Sha384,
        "resty.sha512" => Kind::Sha512,
        "resty.string" => return string_module(lua).map(Some),
        "resty.random" => return random_module(lua).map(Some),
        _ => return Ok(None),
    };
    digest_module(lua, kind).map(Some)
}
