//! `ngx.md5`, `md5_bin`, `sha1_bin`, `hmac_sha1`, `crc32_short`, `crc32_long`.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use mlua::{Lua, Table, Value};
use sha1::Sha1;

use super::arg_bytes;

pub(super) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn md5_bin(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

pub(crate) fn sha1_bin(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

pub(crate) fn hmac_sha1(key: &[u8], data: &[u8]) -> mlua::Result<[u8; 20]> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
        .map_err(|e| mlua::Error::runtime(format!("hmac_sha1: {e}")))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.raw_set(
        "md5",
        lua.create_function(|lua, s: Value| {
            let data = arg_bytes(lua, &s, "md5", 1, true)?;
            Ok(hex(&md5_bin(&data)))
        })?,
    )?;
    ngx.raw_set(
        "md5_bin",
        lua.create_function(|lua, s: Value| {
            let data = arg_bytes(lua, &s, "md5_bin", 1, true)?;
            lua.create_string(md5_bin(&data))
        })?,
    )?;
    ngx.raw_set(
        "sha1_bin",
        lua.create_function(|lua, s: Value| {
            let data = arg_bytes(lua, &s, "sha1_bin", 1, true)?;
            lua.create_string(sha1_bin(&data))
        })?,
    )?;
    ngx.raw_set(
        "hmac_sha1",
        lua.create_function(|lua, (k, s): (Value, Value)| {
            let key = arg_bytes(lua, &k, "hmac_sha1", 1, false)?;
            let data = arg_bytes(lua, &s, "hmac_sha1", 2, false)?;
            lua.create_string(hmac_sha1(&key, &data)?)
        })?,
    )?;
    for name in ["crc32_short", "crc32_long"] {
        ngx.raw_set(
            name,
            lua.create_function(move |lua, s: Value| {
                let data = arg_bytes(lua, &s, name, 1, true)?;
                Ok(crc32fast::hash(&data) as f64)
            })?,
        )?;
    }
    Ok(())
}
