//! `ngx.shared.DICT`: key-value dictionaries shared by every worker's VM, declared in the
//! static config (`lua.shared_dicts: {name: "10m"}`), with lua-nginx-module's methods and
//! return values. Each dictionary has a byte capacity; when full, `set`/`add`/`incr`
//! evict the least recently used entries (and say so: `forcible`), `safe_set`/`safe_add`
//! fail with "no memory" instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use mlua::{Lua, MultiValue, UserData, UserDataMethods, Value};
use parking_lot::Mutex;

/// Bytes an entry is charged beyond its key and value (bookkeeping, as nginx's slab does).
const ENTRY_OVERHEAD: usize = 64;

/// A stored value: what lua-nginx-module accepts.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
}

#[derive(Debug)]
struct Entry {
    value: Stored,
    flags: u32,
    expires: Option<Instant>,
    size: usize,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// One dictionary.
pub struct SharedDict {
    name: String,
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<String, Entry>,
    used: usize,
}

/// How a write that needs room behaves when the dictionary is full.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    Evict,
    Fail,
}

/// `set`-family outcome: (ok, err, forcible).
type SetResult = (bool, Option<&'static str>, bool);

impl SharedDict {
    pub fn new(name: &str, capacity: usize) -> SharedDict {
        SharedDict {
            name: name.to_string(),
            capacity,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    /// When an entry set now with `exptime` seconds expires; `None` never. An exptime too
    /// large to represent (1e300) never expires rather than panicking.
    fn expiry(exptime: f64) -> Option<Instant> {
        if exptime <= 0.0 || exptime.is_nan() {
            return None;
        }
        Duration::try_from_secs_f64(exptime)
            .ok()
            .and_then(|d| Instant::now().checked_add(d))
    }

    fn get(&self, key: &str) -> Option<(Stored, u32)> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let expired = inner.entries.peek(key).is_some_and(|e| e.expired(now));
        if expired {
            inner.remove(key);
            return None;
        }
        inner.entries.get(key).map(|e| (e.value.clone(), e.flags))
    }

    /// Stores `value` (`None` deletes). `only_if`: `Some(true)` = must exist (replace),
    /// `Some(false)` = must not exist (add).
    fn store(
        &self,
        key: &str,
        value: Option<Stored>,
        exptime: f64,
        flags: u32,
        only_if: Option<bool>,
        room: Room,
    ) -> SetResult {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let exists = inner.entries.peek(key).is_some_and(|e| !e.expired(now));
        match only_if {
            Some(false) if exists => return (false, Some("exists"), false),
            Some(true) if !exists => return (false, Some("not found"), false),
            _ => {}
        }
        inner.remove(key);
        let Some(value) = value else {
            return (true, None, false);
        };
        let size = key.len()
            + ENTRY_OVERHEAD
            + match &value {
                Stored::Str(s) => s.len(),
                _ => 8,
            };
        if size > self.capacity {
            return (false, Some("no memory"), false);
        }
        let mut forcible = false;
        while inner.used + size > self.capacity {
            if room == Room::Fail && !inner.drop_expired(now) {
                return (false, Some("no memory"), false);
            }
            if !inner.drop_expired(now) {
                if let Some((_, e)) = inner.entries.pop_lru() {
                    inner.used -= e.size;
                    forcible = true;
                }
            }
        }
        inner.used += size;
        inner.entries.put(
            key.to_string(),
            Entry {
                value,
                flags,
                expires: SharedDict::expiry(exptime),
                size,
            },
        );
        (true, None, forcible)
    }

    fn incr(
        &self,
        key: &str,
        by: f64,
        init: Option<f64>,
        init_ttl: f64,
    ) -> Result<(f64, bool), &'static str> {
        {
            let mut inner = self.inner.lock();
            let now = Instant::now();
            if let Some(e) = inner.entries.get_mut(key).filter(|e| !e.expired(now)) {
                return match &mut e.value {
                    Stored::Num(n) => {
                        *n += by;
                        Ok((*n, false))
                    }
                    _ => Err("not a number"),
                };
            }
        }
        let Some(init) = init else {
            return Err("not found");
        };
        let value = init + by;
        match self.store(
            key,
            Some(Stored::Num(value)),
            init_ttl,
            0,
            None,
            Room::Evict,
        ) {
            (true, _, forcible) => Ok((value, forcible)),
            (false, err, _) => Err(err.unwrap_or("no memory")),
        }
    }

    fn keys(&self, max: usize) -> Vec<String> {
        let inner = self.inner.lock();
        let now = Instant::now();
        inner
            .entries
            .iter()
            .filter(|(_, e)| !e.expired(now))
            .map(|(k, _)| k.clone())
            .take(if max == 0 { usize::MAX } else { max })
            .collect()
    }

    fn ttl(&self, key: &str) -> Option<f64> {
        let inner = self.inner.lock();
        let now = Instant::now();
        let e = inner.entries.peek(key).filter(|e| !e.expired(now))?;
        Some(e.expires.map(|x| (x - now).as_secs_f64()).unwrap_or(0.0))
    }

    fn expire(&self, key: &str, exptime: f64) -> bool {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match inner.entries.peek_mut(key).filter(|e| !e.expired(now)) {
            Some(e) => {
                e.expires = SharedDict::expiry(exptime);
                true
            }
            None => false,
        }
    }

    fn flush_all(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        inner.used = 0;
    }

    fn free_space(&self) -> usize {
        self.capacity.saturating_sub(self.inner.lock().used)
    }
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.pop(key) {
            self.used -= e.size;
        }
    }

    /// Drops one expired entry; false when there is none.
    fn drop_expired(&mut self, now: Instant) -> bool {
        let key = self
            .entries
            .iter()
            .rev()
            .find(|(_, e)| e.expired(now))
            .map(|(k, _)| k.clone());
        match key {
            Some(k) => {
                self.remove(&k);
                true
            }
            None => false,
        }
    }
}

/// Every dictionary of the process, by name.
#[derive(Default)]
pub struct SharedDicts {
    dicts: BTreeMap<String, Arc<SharedDict>>,
}

impl SharedDicts {
    /// From the static config: name → size such as `"10m"`, `"512k"`, `"4096"`.
    pub fn from_config(sizes: &BTreeMap<String, String>) -> Result<SharedDicts, String> {
        let mut dicts = BTreeMap::new();
        for (name, size) in sizes {
            let bytes = parse_size(size).ok_or_else(|| {
                format!("lua.shared_dicts.{name}: `{size}` is not a size like 10m, 512k or 8192")
            })?;
            if bytes < 8 * 1024 {
                return Err(format!("lua.shared_dicts.{name}: must be at least 8k"));
            }
            dicts.insert(name.clone(), Arc::new(SharedDict::new(name, bytes)));
        }
        Ok(SharedDicts { dicts })
    }

    /// The `ngx.shared` table of one VM: the same dictionaries in every VM.
    pub fn table(&self, lua: &Lua) -> mlua::Result<mlua::Table> {
        let t = lua.create_table()?;
        for (name, dict) in &self.dicts {
            t.raw_set(name.as_str(), DictHandle(Arc::clone(dict)))?;
        }
        Ok(t)
    }
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

/// A dictionary as Lua sees it (`ngx.shared.DICT`), methods called with `:`.
#[derive(Clone)]
struct DictHandle(Arc<SharedDict>);

fn stored(v: Value) -> mlua::Result<Option<Stored>> {
    Ok(match v {
        Value::Nil => None,
        Value::Boolean(b) => Some(Stored::Bool(b)),
        Value::Integer(i) => Some(Stored::Num(i as f64)),
        Value::Number(n) => Some(Stored::Num(n)),
        Value::String(s) => Some(Stored::Str(s.as_bytes().to_vec())),
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad value type: {} (only strings, numbers, booleans and nil can be stored)",
                other.type_name()
            )))
        }
    })
}

fn to_lua(lua: &Lua, v: Stored) -> mlua::Result<Value> {
    Ok(match v {
        Stored::Str(s) => Value::String(lua.create_string(s)?),
        Stored::Num(n) => Value::Number(n),
        Stored::Bool(b) => Value::Boolean(b),
    })
}

fn set_result(lua: &Lua, (ok, err, forcible): SetResult) -> mlua::Result<MultiValue> {
    let err = match err {
        Some(e) => Value::String(lua.create_string(e)?),
        None => Value::Nil,
    };
    Ok(MultiValue::from_vec(vec![
        Value::Boolean(ok),
        err,
        Value::Boolean(forcible),
    ]))
}

type SetArgs = (String, Value, Option<f64>, Option<u32>);

impl UserData for DictHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, d, key: String| match d.0.get(&key) {
            Some((v, 0)) => Ok(MultiValue::from_vec(vec![to_lua(lua, v)?])),
            Some((v, flags)) => Ok(MultiValue::from_vec(vec![
                to_lua(lua, v)?,
                Value::Integer(flags.into()),
            ])),
            None => Ok(MultiValue::from_vec(vec![Value::Nil])),
        });
        let setter = |only_if: Option<bool>, room: Room| {
            move |lua: &Lua, d: &DictHandle, (key, value, exptime, flags): SetArgs| {
                let value = stored(value)?;
                if value.is_none() && only_if.is_some() {
                    return Err(mlua::Error::runtime("attempt to add or replace nil values"));
                }
                set_result(
                    lua,
                    d.0.store(
                        &key,
                        value,
                        exptime.unwrap_or(0.0),
                        flags.unwrap_or(0),
                        only_if,
                        room,
                    ),
                )
            }
        };
        methods.add_method("set", setter(None, Room::Evict));
        methods.add_method("safe_set", setter(None, Room::Fail));
        methods.add_method("add", setter(Some(false), Room::Evict));
        methods.add_method("safe_add", setter(Some(false), Room::Fail));
        methods.add_method("replace", setter(Some(true), Room::Evict));
        methods.add_method("delete", |lua, d, key: String| {
            set_result(lua, d.0.store(&key, None, 0.0, 0, None, Room::Evict))
        });
        methods.add_method(
            "incr",
            |lua, d, (key, by, init, init_ttl): (String, f64, Option<f64>, Option<f64>)| {
                match d.0.incr(&key, by, init, init_ttl.unwrap_or(0.0)) {
                    // lua-resty-core: `forcible` comes back only when an `init` was given.
                    Ok((n, forcible)) if init.is_some() => Ok(MultiValue::from_vec(vec![
                        Value::Number(n),
                        Value::Nil,
                        Value::Boolean(forcible),
                    ])),
                    Ok((n, _)) => Ok(MultiValue::from_vec(vec![Value::Number(n)])),
                    Err(e) => Ok(MultiValue::from_vec(vec![
                        Value::Nil,
                        Value::String(lua.create_string(e)?),
                    ])),
                }
            },
        );
        methods.add_method("get_keys", |_, d, max: Option<usize>| {
            Ok(d.0.keys(max.unwrap_or(1024)))
        });
        methods.add_method("flush_all", |_, d, ()| {
            d.0.flush_all();
            Ok(())
        });
        methods.add_method("flush_expired", |_, _d, _max: Option<usize>| Ok(0));
        methods.add_method("ttl", |lua, d, key: String| match d.0.ttl(&key) {
            Some(t) => Ok(MultiValue::from_vec(vec![Value::Number(t)])),
            None => Ok(MultiValue::from_vec(vec![
                Value::Nil,
                Value::String(lua.create_string("not found")?),
            ])),
        });
        methods.add_method("expire", |lua, d, (key, exptime): (String, f64)| {
            if d.0.expire(&key, exptime) {
                Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
            } else {
                Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::String(lua.create_string("not found")?),
                ]))
            }
        });
        methods.add_method("capacity", |_, d, ()| Ok(d.0.capacity));
        methods.add_method("free_space", |_, d, ()| Ok(d.0.free_space()));
        methods.add_meta_method("__tostring", |_, d, ()| {
            Ok(format!("ngx.shared.{}", d.0.name))
        });
    }
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
    }

    #[test]
    fn add_replace_incr_ttl_and_eviction() {
        let d = SharedDict::new("t", 16 * 1024);
        assert_eq!(
            d.store(
                "a",
                Some(Stored::Num(1.0)),
                0.0,
                0,
                Some(false),
                Room::Evict
            ),
            (true, None, false)
        );
        assert_eq!(
            d.store(
                "a",
                Some(Stored::Num(2.0)),
                0.0,
                0,
                Some(false),
                Room::Evict
            ),
            (false, Some("exists"), false)
        );
        assert_eq!(
            d.store("b", Some(Stored::Num(2.0)), 0.0, 0, Some(true), Room::Evict),
            (false, Some("not found"), false)
        );
        assert_eq!(d.incr("a", 5.0, None, 0.0), Ok((6.0, false)));
        assert_eq!(d.incr("n", 1.0, None, 0.0), Err("not found"));
        assert_eq!(d.incr("n", 1.0, Some(10.0), 0.0), Ok((11.0, false)));
        d.store(
            "s",
            Some(Stored::Str(b"x".to_vec())),
            0.0,
            0,
            None,
            Room::Evict,
        );
        assert_eq!(d.incr("s", 1.0, None, 0.0), Err("not a number"));
        assert_eq!(d.ttl("a"), Some(0.0));
        assert!(d.expire("a", 100.0));
        assert!(d.ttl("a").is_some_and(|t| t > 99.0 && t <= 100.0));
        assert_eq!(d.ttl("zz"), None);
        // Fill past capacity: set evicts (forcible), safe_set refuses.
        let big = vec![b'x'; 4000];
        let mut forcible = false;
        for i in 0..10 {
            forcible |= d
                .store(
                    &format!("k{i}"),
                    Some(Stored::Str(big.clone())),
                    0.0,
                    0,
                    None,
                    Room::Evict,
                )
                .2;
        }
        assert!(forcible);
        assert!(d.inner.lock().used <= 16 * 1024);
        assert_eq!(
            d.store("k-safe", Some(Stored::Str(big)), 0.0, 0, None, Room::Fail),
            (false, Some("no memory"), false)
        );
        d.flush_all();
        assert!(d.keys(0).is_empty());
    }

    #[test]
    fn expired_entries_disappear() {
        let d = SharedDict::new("t", 16 * 1024);
        d.store("a", Some(Stored::Bool(true)), 0.001, 3, None, Room::Evict);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.get("a"), None);
        assert!(d.keys(0).is_empty());
    }

    #[test]
    fn huge_exptimes_never_expire_instead_of_panicking() {
        let d = SharedDict::new("t", 16 * 1024);
        for exptime in [1e300, 1.9e19, f64::INFINITY, f64::MAX] {
            d.store("a", Some(Stored::Bool(true)), exptime, 0, None, Room::Evict);
            assert_eq!(d.get("a").map(|(v, _)| v), Some(Stored::Bool(true)));
        }
        assert_eq!(SharedDict::expiry(f64::NAN), None);
        assert_eq!(SharedDict::expiry(-1.0), None);
    }
}
