//! Tests of the lua-resty-string modules, `ngx.re.split`, `bit` and the table
//! extensions, in a fresh VM as in `tests.rs`.

use mlua::Lua;

use super::{builtin_module, install, install_globals};

fn check(code: &str) {
    let lua = Lua::new();
    let ngx = lua.create_table().unwrap();
    install(&lua, &ngx).unwrap();
    lua.globals().set("ngx", ngx).unwrap();
    install_globals(&lua, &lua.globals()).unwrap();
    let require = lua
        .create_function(|lua, name: String| match builtin_module(lua, &name)? {
            Some(m) => Ok(m),
            None => Err(mlua::Error::runtime(format!("module '{name}' not found"))),
        })
        .unwrap();
    lua.globals().set("require", require).unwrap();
    let prelude = "function eq(got, want, what) if got ~= want then error(string.format('%s: expected %s, got %s', what or 'value', tostring(want), tostring(got)), 2) end end\n";
    if let Err(e) = lua.load(format!("{prelude}{code}")).exec() {
        panic!("{e}\n--- in:\n{code}");
    }
}

#[test]
fn resty_digests_have_the_object_api() {
    check(
        r#"
        local str = require "resty.string"
        local cases = {
            { "resty.md5", "900150983cd24fb0d6963f7d28e17f72" },
            { "resty.sha1", "a9993e364706816aba3e25717850c26c9cd0d89d" },
            { "resty.sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
            { "resty.sha512", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f" },
        }
        for _, c in ipairs(cases) do
            local mod = require(c[1])
            local o = mod:new()
            eq(o:update("a"), true, c[1] .. " update")
            o:update("bc")
            eq(str.to_hex(o:final()), c[2], c[1])
            o:reset()
            o:update("abc")
            eq(str.to_hex(o:final()), c[2], c[1] .. " after reset")
        end
        eq(#require("resty.sha384").new():final(), 48, "sha384 length")
        "#,
    );
}

#[test]
fn resty_string_and_random() {
    check(
        r#"
        local str = require "resty.string"
        eq(str.to_hex("\0\255A"), "00ff41")
        eq(str.atoi("  42abc"), 42)
        eq(str.atoi("-7"), -7)
        eq(str.atoi("x"), 0)
        local rnd = require "resty.random"
        local a, b = rnd.bytes(16, true), rnd.bytes(16)
        eq(#a, 16); eq(#b, 16)
        assert(a ~= b, "random bytes differ")
        eq(rnd.bytes(0), "")
        "#,
    );
}

#[test]
fn re_split_follows_lua_resty_core() {
    check(
        r#"
        local re = require "ngx.re"
        local function j(t) return table.concat(t, "|") end
        eq(j(re.split("a,b,c,d", ",")), "a|b|c|d")
        eq(j(re.split("a,b,c,d", "(,)")), "a|,|b|,|c|,|d")
        eq(j(re.split("abcd", "")), "a|b|c|d")
        eq(j(re.split("abcd", "", nil, nil, 2)), "a|bcd")
        eq(j(re.split("a,b,c,d", ",", nil, { pos = 5 })), "c|d")
        eq(j(re.split("a,b,c,d", ",", nil, nil, 3)), "a|b|c,d")
        eq(j(re.split("a,b,c,d", ",", nil, nil, 0)), "a|b|c|d")
        local r = re.split(",a,b,c,d,", ",")
        eq(#r, 5); eq(r[1], "")
        eq(j(re.split("a1b22c", "\\d+")), "a|b|c")
        eq(j(re.split("abc", "x")), "abc")
        eq(#re.split("", ","), 0)
        local mine = { "W", "X", "Y", "Z" }
        local res = re.split("a,b", ",", nil, nil, nil, mine)
        assert(res == mine)
        eq(mine[1], "a"); eq(mine[2], "b"); eq(mine[3], nil); eq(mine[4], "Z")
        local bad, err = re.split("a", "(")
        eq(bad, nil); assert(err, "error string")
        eq(ngx.re.split, re.split)
        re.opt("jit_stack_size", 128 * 1024)
        "#,
    );
}

#[test]
fn bit_is_global_and_table_extensions_exist() {
    check(
        r#"
        eq(bit.band(0xff, 0x0f), 15)
        eq(bit, require "bit")
        local t = table.new(4, 2)
        t[1] = 1; t.x = 2
        eq(table.nkeys(t), 2)
        table.clear(t)
        eq(next(t), nil)
        local ok, new_tab = pcall(require, "table.new")
        assert(ok and type(new_tab) == "function")
        eq(type(new_tab(1, 1)), "table")
        eq((require "table.nkeys")({ a = 1, 1, 2 }), 3)
        "#,
    );
}
