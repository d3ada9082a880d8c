//! The process's `ngx.shared` dictionaries: declared in the static config
//! (`lua.shared_dicts`) or by a Lua plugin module (`shared_dicts = { name = "10m" }`),
//! in which case they are created at apply time, without a restart. A dictionary is
//! never removed while the process runs (like an nginx zone, its entries outlive the
//! configuration that named it); a declaration larger than its current size grows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use mlua::{Lua, Table, Value};
use parking_lot::RwLock;

use super::shared_dict::SharedDict;
use super::shared_dict_lua::DictHandle;

/// The smallest dictionary, as nginx requires of a shared zone.
const MIN_SIZE: usize = 8 * 1024;

/// Every dictionary of the process, by name. Clones share the same dictionaries.
#[derive(Default, Clone)]
pub struct SharedDicts {
    dicts: Arc<RwLock<BTreeMap<String, Arc<SharedDict>>>>,
}

impl SharedDicts {
    /// From the static config: name → size such as `"10m"`, `"512k"`, `"8192"`.
    pub fn from_config(sizes: &BTreeMap<String, String>) -> Result<SharedDicts, String> {
        let dicts = SharedDicts::default();
        for (name, size) in sizes {
            let bytes = checked_size(size).map_err(|e| format!("lua.shared_dicts.{name}: {e}"))?;
            dicts.ensure(name, bytes);
        }
        Ok(dicts)
    }

    /// Creates `name` with `bytes` of capacity, or grows it to `bytes` if it is smaller.
    pub fn ensure(&self, name: &str, bytes: usize) {
        if let Some(d) = self.dicts.read().get(name) {
            if d.capacity() < bytes {
                d.set_capacity(bytes);
            }
            return;
        }
        let mut dicts = self.dicts.write();
        let d = dicts
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(SharedDict::new(name, bytes)));
        if d.capacity() < bytes {
            d.set_capacity(bytes);
        }
    }

    /// The dictionary called `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<SharedDict>> {
        self.dicts.read().get(name).cloned()
    }

    /// The `ngx.shared` table of one VM: an empty read-only proxy whose reads look the
    /// name up in this set (so a dictionary created later is visible at once) and keep
    /// the handle in a cache table Lua code cannot reach.
    pub fn table(&self, lua: &Lua) -> mlua::Result<Table> {
        let cache = lua.create_table()?;
        let cache_mt = lua.create_table()?;
        let dicts = self.clone();
        cache_mt.raw_set(
            "__index",
            lua.create_function(move |_, (cache, name): (Table, Value)| {
                let Value::String(name) = name else {
                    return Ok(Value::Nil);
                };
                let Some(dict) = name.to_str().ok().and_then(|n| dicts.get(&n)) else {
                    return Ok(Value::Nil);
                };
                let handle = cache.raw_get::<Value>(&name)?;
                if !handle.is_nil() {
                    return Ok(handle);
                }
                cache.raw_set(&name, DictHandle(dict))?;
                cache.raw_get::<Value>(&name)
            })?,
        )?;
        cache.set_metatable(Some(cache_mt))?;
        let proxy = lua.create_table()?;
        let proxy_mt = lua.create_table()?;
        proxy_mt.raw_set("__index", cache)?;
        proxy_mt.raw_set("__metatable", "ngx.shared")?;
        proxy.set_metatable(Some(proxy_mt))?;
        proxy.set_readonly(true);
        Ok(proxy)
    }
}

/// A dictionary size as declared: an nginx size of at least 8k.
pub fn checked_size(size: &str) -> Result<usize, String> {
    let bytes =
        parse_size(size).ok_or_else(|| format!("`{size}` is not a size like 10m, 512k or 8192"))?;
    if bytes < MIN_SIZE {
        return Err("must be at least 8k".to_string());
    }
    Ok(bytes)
}

/// nginx sizes: a number of bytes with an optional `k`/`m`/`g` suffix.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1024),
        'm' => (&s[..s.len() - 1], 1024 * 1024),
        'g' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s.as_str(), 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_nginx() {
        assert_eq!(parse_size("10m"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("512k"), Some(512 * 1024));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert!(checked_size("4k").is_err());
    }

    #[test]
    fn dictionaries_created_later_are_seen_by_existing_vms() {
        let dicts = SharedDicts::default();
        let lua = Lua::new();
        lua.globals()
            .raw_set("shared", dicts.table(&lua).unwrap())
            .unwrap();
        let missing: bool = lua.load("return shared.later == nil").eval().unwrap();
        assert!(missing);
        dicts.ensure("later", 16 * 1024);
        let v: f64 = lua
            .load("shared.later:set('k', 41); return shared.later:incr('k', 1)")
            .eval()
            .unwrap();
        assert_eq!(v, 42.0);
        // Growing keeps the entries; a smaller declaration does not shrink it.
        dicts.ensure("later", 32 * 1024);
        dicts.ensure("later", 8 * 1024);
        let (v, cap): (f64, usize) = lua
            .load("return shared.later:get('k'), shared.later:capacity()")
            .eval()
            .unwrap();
        assert_eq!((v, cap), (42.0, 32 * 1024));
        assert!(lua.load("shared.later = 1").exec().is_err());
        assert!(lua.load("shared.x = 1").exec().is_err());
    }
}
