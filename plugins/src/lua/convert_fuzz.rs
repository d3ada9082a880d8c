//! Fuzzing the JSON <-> Lua conversions with proptest: `cjson.decode`/`encode` and the
//! Rust conversions of plugin configuration and returned bodies (`convert.rs`).
//! Arbitrary JSON round-trips without a panic, arbitrary input never panics, and deep
//! nesting is an error, not a stack overflow.
//!
//! Each property runs proptest's default 256 cases (a few seconds); a longer run:
//! `PROPTEST_CASES=100000 cargo test -p portico-plugins --lib lua::convert_fuzz`.

use std::time::Duration;

use mlua::{Function, Table, Value};
use proptest::prelude::*;
use serde_json::Value as J;

use super::convert::{json_to_lua, lua_to_json, lua_to_json_bounded, MAX_CONF_DEPTH};
use super::{LuaLimits, LuaVm, SharedDicts};

fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(5),
        max_memory: 64 * 1024 * 1024,
        max_pending_timers: 1024,
    };
    LuaVm::new(limits, (0, 1), &SharedDicts::default()).unwrap()
}

fn cjson(vm: &LuaVm, name: &str) -> (Function, Function) {
    let Some(Value::Table(m)) = super::ngx_lib::builtin_module(&vm.lua, name).unwrap() else {
        panic!("no {name}");
    };
    let m: Table = m;
    (m.get("decode").unwrap(), m.get("encode").unwrap())
}

/// JSON values whose numbers survive lua-cjson's `%.14g`.
fn arb_json() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        (-(1i64 << 40)..(1i64 << 40)).prop_map(J::from),
        (-(1i32 << 20)..(1i32 << 20)).prop_map(|k| J::from(k as f64 / 4.0)),
        any::<String>().prop_map(J::String),
        "[\\x00-\\x7f]{0,12}".prop_map(J::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(J::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}

/// What a JSON value becomes after a trip through Lua: an empty array is an empty
/// table, which encodes as `{}`; numbers compare as doubles.
fn normalize(v: &J) -> J {
    match v {
        J::Array(a) if a.is_empty() => J::Object(serde_json::Map::new()),
        J::Array(a) => J::Array(a.iter().map(normalize).collect()),
        J::Object(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        J::Number(n) => J::from(n.as_f64().unwrap_or(0.0)),
        other => other.clone(),
    }
}

#[test]
fn cjson_round_trips_arbitrary_json() {
    let vm = vm();
    let (decode, encode) = cjson(&vm, "cjson");
    proptest!(|(v in arb_json())| {
        let text = serde_json::to_string(&v).unwrap();
        let decoded: Value = decode.call(text.as_str()).unwrap();
        let encoded: mlua::LuaString = encode.call(decoded).unwrap();
        let back: J = serde_json::from_slice(&encoded.as_bytes()).unwrap();
        prop_assert_eq!(normalize(&back), normalize(&v), "{}", text);
    });
}

#[test]
fn cjson_decode_never_panics_on_arbitrary_input() {
    let vm = vm();
    let (decode, _) = cjson(&vm, "cjson.safe");
    proptest!(|(bytes in prop::collection::vec(any::<u8>(), 0..64),
                text in "[\\[\\]{}\",:0-9eE.+\\-a-z\\\\ ]{0,48}")| {
        for input in [bytes.as_slice(), text.as_bytes()] {
            let s = vm.lua.create_string(input).unwrap();
            let r: mlua::Result<mlua::MultiValue> = decode.call(s);
            prop_assert!(r.is_ok(), "{:?}: {:?}", input, r);
        }
    });
}

#[test]
fn config_and_body_conversions_round_trip() {
    let vm = vm();
    proptest!(|(v in arb_json())| {
        let lua_value = json_to_lua(&vm.lua, &v).unwrap();
        let back = lua_to_json(&lua_value).unwrap();
        prop_assert_eq!(normalize(&back), normalize(&v));
    });
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let vm = vm();
    let (decode, encode) = cjson(&vm, "cjson.safe");
    proptest!(ProptestConfig { cases: 32, ..ProptestConfig::default() }, |(depth in 1usize..3000, object in any::<bool>())| {
        let (open, close) = if object { ("{\"k\":", "}") } else { ("[", "]") };
        let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let (value, err): (Value, Option<String>) = decode.call(text).unwrap();
        if depth <= 1000 {
            prop_assert!(err.is_none(), "depth {}: {:?}", depth, err);
            // Encoding the decoded value back hits the same depth limit.
            let (_, err): (Value, Option<String>) = encode.call(value).unwrap();
            prop_assert!(err.is_none(), "depth {}: {:?}", depth, err);
        } else {
            let err = err.unwrap_or_default();
            prop_assert!(err.contains("too many nested"), "depth {}: {}", depth, err);
        }
        let mut v = J::from(1);
        for _ in 0..depth {
            // Not `json!`: it would serialize `v` again, recursively.
            v = if object {
                J::Object(std::iter::once(("k".to_string(), v)).collect())
            } else {
                J::Array(vec![v])
            };
        }
        let r = json_to_lua(&vm.lua, &v);
        prop_assert_eq!(r.is_ok(), depth <= MAX_CONF_DEPTH, "depth {}", depth);
        // serde_json drops recursively: unwind the value by hand.
        while let Some(inner) = match &mut v {
            J::Array(a) => a.pop(),
            J::Object(m) => m.remove("k"),
            _ => None,
        } {
            v = inner;
        }
    });
}

/// A returned body that shares one table many times (or refers to itself) is bounded:
/// the conversion ends instead of expanding exponentially.
#[test]
fn shared_and_cyclic_body_tables_are_bounded() {
    let vm = vm();
    let shared: Value = vm
        .lua
        .load("local a = {'x'} for i = 1, 60 do a = {a, a} end return a")
        .eval()
        .unwrap();
    let t = std::time::Instant::now();
    assert!(lua_to_json_bounded(&shared, 1_000_000, &|| false).is_none());
    // Unbounded, the expansion would take 2^60 steps; the bound only has to tell that
    // apart, not time a loaded 2-core debug build (about 3 s alone, over 5 s under load).
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let cyclic: Value = vm
        .lua
        .load("local t = {} t.self = t return t")
        .eval()
        .unwrap();
    assert!(lua_to_json(&cyclic).is_some());
}
