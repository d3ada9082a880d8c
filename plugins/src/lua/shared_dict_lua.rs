//! `ngx.shared.DICT` as Lua sees it: lua-nginx-module's methods and return values on a
//! [`SharedDict`], called with `:`.

use std::sync::Arc;

use mlua::{BString, Lua, MultiValue, UserData, UserDataMethods, Value};

use super::shared_dict::{Room, SetResult, SharedDict, Stored};

/// A dictionary handle (`ngx.shared.NAME`).
#[derive(Clone)]
pub(super) struct DictHandle(pub(super) Arc<SharedDict>);

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

// Keys are `BString`s: mlua copies them straight off Lua's stack, where a `LuaString`
// takes and releases a reference on its auxiliary stack on every call.
type SetArgs = (BString, Value, Option<f64>, Option<u32>);

impl UserData for DictHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, d, key: BString| match d.0.get(&key) {
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
        methods.add_method("delete", |lua, d, key: BString| {
            set_result(lua, d.0.store(&key, None, 0.0, 0, None, Room::Evict))
        });
        methods.add_method(
            "incr",
            |lua, d, (key, by, init, init_ttl): (BString, f64, Option<f64>, Option<f64>)| {
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
        methods.add_method("get_keys", |lua, d, max: Option<usize>| {
            let t = lua.create_table()?;
            for k in d.0.keys(max.unwrap_or(1024)) {
                t.raw_push(lua.create_string(k)?)?;
            }
            Ok(t)
        });
        methods.add_method("flush_all", |_, d, ()| {
            d.0.flush_all();
            Ok(())
        });
        methods.add_method("flush_expired", |_, _d, _max: Option<usize>| Ok(0));
        methods.add_method("ttl", |lua, d, key: BString| match d.0.ttl(&key) {
            Some(t) => Ok(MultiValue::from_vec(vec![Value::Number(t)])),
            None => Ok(MultiValue::from_vec(vec![
                Value::Nil,
                Value::String(lua.create_string("not found")?),
            ])),
        });
        methods.add_method("expire", |lua, d, (key, exptime): (BString, f64)| {
            if d.0.expire(&key, exptime) {
                Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
            } else {
                Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::String(lua.create_string("not found")?),
                ]))
            }
        });
        methods.add_method("capacity", |_, d, ()| Ok(d.0.capacity()));
        methods.add_method("free_space", |_, d, ()| Ok(d.0.free_space()));
        methods.add_meta_method("__tostring", |_, d, ()| {
            Ok(format!("ngx.shared.{}", d.0.name))
        });
    }
}
