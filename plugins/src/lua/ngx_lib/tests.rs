//! Tests: Lua snippets run in a fresh VM with `install` and a `require` over
//! `builtin_module`; expected values follow OpenResty's documentation and
//! behaviour.

use mlua::{Lua, Value};

use super::{builtin_module, install};

const PRELUDE: &str = r##"
function eq(got, want, what)
    if got ~= want then
        error(string.format("%s: expected %s, got %s", what or "value",
            tostring(want), tostring(got)), 2)
    end
end
"##;

fn vm() -> Lua {
    let lua = Lua::new();
    let ngx = lua.create_table().unwrap();
    install(&lua, &ngx).unwrap();
    lua.globals().set("ngx", ngx).unwrap();
    let require = lua
        .create_function(|lua, name: String| match builtin_module(lua, &name)? {
            Some(m) => Ok(m),
            None => Err(mlua::Error::runtime(format!("module '{name}' not found"))),
        })
        .unwrap();
    lua.globals().set("require", require).unwrap();
    lua.load(PRELUDE).exec().unwrap();
    lua
}

/// Runs a snippet full of `eq`/`assert` checks.
fn check(code: &str) {
    let lua = vm();
    if let Err(e) = lua.load(code).exec() {
        panic!("{e}\n--- in:\n{code}");
    }
}

fn eval<T: mlua::FromLuaMulti>(code: &str) -> T {
    vm().load(code).eval().unwrap()
}

// ------------------------------------------------------------ constants

#[test]
fn constants() {
    check(
        r##"
        eq(ngx.OK, 0) eq(ngx.ERROR, -1) eq(ngx.AGAIN, -2) eq(ngx.DONE, -4) eq(ngx.DECLINED, -5)
        eq(ngx.HTTP_CONTINUE, 100) eq(ngx.HTTP_SWITCHING_PROTOCOLS, 101) eq(ngx.HTTP_PROCESSING, 102)
        eq(ngx.HTTP_OK, 200) eq(ngx.HTTP_CREATED, 201) eq(ngx.HTTP_ACCEPTED, 202)
        eq(ngx.HTTP_NON_AUTHORITATIVE_INFORMATION, 203)
        eq(ngx.HTTP_NO_CONTENT, 204) eq(ngx.HTTP_PARTIAL_CONTENT, 206)
        eq(ngx.HTTP_SPECIAL_RESPONSE, 300) eq(ngx.HTTP_MOVED_PERMANENTLY, 301)
        eq(ngx.HTTP_MOVED_TEMPORARILY, 302) eq(ngx.HTTP_SEE_OTHER, 303) eq(ngx.HTTP_NOT_MODIFIED, 304)
        eq(ngx.HTTP_TEMPORARY_REDIRECT, 307) eq(ngx.HTTP_PERMANENT_REDIRECT, 308)
        eq(ngx.HTTP_BAD_REQUEST, 400) eq(ngx.HTTP_UNAUTHORIZED, 401) eq(ngx.HTTP_PAYMENT_REQUIRED, 402)
        eq(ngx.HTTP_FORBIDDEN, 403) eq(ngx.HTTP_NOT_FOUND, 404) eq(ngx.HTTP_NOT_ALLOWED, 405)
        eq(ngx.HTTP_NOT_ACCEPTABLE, 406) eq(ngx.HTTP_REQUEST_TIMEOUT, 408) eq(ngx.HTTP_CONFLICT, 409)
        eq(ngx.HTTP_GONE, 410) eq(ngx.HTTP_LENGTH_REQUIRED, 411) eq(ngx.HTTP_PRECONDITION_FAILED, 412)
        eq(ngx.HTTP_REQUEST_ENTITY_TOO_LARGE, 413) eq(ngx.HTTP_REQUEST_URI_TOO_LARGE, 414)
        eq(ngx.HTTP_UNSUPPORTED_MEDIA_TYPE, 415) eq(ngx.HTTP_RANGE_NOT_SATISFIABLE, 416)
        eq(ngx.HTTP_UPGRADE_REQUIRED, 426) eq(ngx.HTTP_TOO_MANY_REQUESTS, 429) eq(ngx.HTTP_CLOSE, 444)
        eq(ngx.HTTP_ILLEGAL, 451) eq(ngx.HTTP_REQUEST_HEADER_TOO_LARGE, 494)
        eq(ngx.HTTP_INTERNAL_SERVER_ERROR, 500) eq(ngx.HTTP_METHOD_NOT_IMPLEMENTED, 501)
        eq(ngx.HTTP_BAD_GATEWAY, 502) eq(ngx.HTTP_SERVICE_UNAVAILABLE, 503)
        eq(ngx.HTTP_GATEWAY_TIMEOUT, 504) eq(ngx.HTTP_VERSION_NOT_SUPPORTED, 505)
        eq(ngx.HTTP_INSUFFICIENT_STORAGE, 507)
        eq(ngx.HTTP_GET, 2) eq(ngx.HTTP_HEAD, 4) eq(ngx.HTTP_POST, 8) eq(ngx.HTTP_PUT, 16)
        eq(ngx.HTTP_DELETE, 32) eq(ngx.HTTP_MKCOL, 64) eq(ngx.HTTP_COPY, 128) eq(ngx.HTTP_MOVE, 256)
        eq(ngx.HTTP_OPTIONS, 512) eq(ngx.HTTP_PROPFIND, 1024) eq(ngx.HTTP_PROPPATCH, 2048)
        eq(ngx.HTTP_LOCK, 4096) eq(ngx.HTTP_UNLOCK, 8192) eq(ngx.HTTP_PATCH, 16384)
        eq(ngx.HTTP_TRACE, 32768)
        eq(ngx.STDERR, 0) eq(ngx.EMERG, 1) eq(ngx.ALERT, 2) eq(ngx.CRIT, 3) eq(ngx.ERR, 4)
        eq(ngx.WARN, 5) eq(ngx.NOTICE, 6) eq(ngx.INFO, 7) eq(ngx.DEBUG, 8)
        eq(tostring(ngx.HTTP_OK), "200")
        eq(type(ngx.null), "userdata")
        eq(ngx.null, require("cjson").null)
        eq(ngx.null, require("cjson.safe").null)
        "##,
    );
    let null: Value = eval("return ngx.null");
    assert_eq!(null, Value::NULL);
}

#[test]
fn unknown_module_is_none() {
    let lua = Lua::new();
    assert!(builtin_module(&lua, "resty.http").unwrap().is_none());
    assert!(builtin_module(&lua, "bit").unwrap().is_some());
}

#[test]
fn builtin_module_is_cached_per_vm() {
    check(
        r##"
        assert(rawequal(require("cjson"), require("cjson")))
        assert(not rawequal(require("cjson"), require("cjson.safe")))
        assert(not pcall(function() require("cjson").encode = nil end))
        assert(not pcall(function() require("bit").band = nil end))
        assert(not pcall(function() ngx.re.match = nil end))
        require("cjson").encode_empty_table_as_object(false)
        eq(require("cjson").encode({}), "[]")
        eq(require("cjson.safe").encode({}), "{}")
        "##,
    );
}

// ------------------------------------------------------------ ngx.re

#[test]
fn re_match_doc_examples() {
    check(
        r##"
        local m, err = ngx.re.match("hello, 1234", "[0-9]+")
        eq(m[0], "1234")
        m = ngx.re.match("hello, 1234", "([0-9])[0-9]+")
        eq(m[0], "1234") eq(m[1], "1")
        m = ngx.re.match("hello, 1234", "(?<first>[0-9])[0-9]+")
        eq(m[0], "1234") eq(m[1], "1") eq(m.first, "1")
        m = ngx.re.match("hello, world", "HEL LO", "ix")
        eq(m[0], "hello")
        m = ngx.re.match("hello, 美好生活", "HELLO, (.{2})", "iu")
        eq(m[0], "hello, 美好") eq(m[1], "美好")
        m = ngx.re.match("hello", "(h)(x)?")
        eq(m[1], "h") eq(m[2], false)
        m = ngx.re.match("abc", "x")
        eq(m, nil)
        -- no match returns a single nil
        eq(select("#", ngx.re.match("abc", "x")), 1)
        -- subject coerced from number
        m = ngx.re.match(12345, "3(4)")
        eq(m[1], "4")
        "##,
    );
}

#[test]
fn re_match_ctx_and_res() {
    check(
        r##"
        local ctx = {}
        local m = ngx.re.match("1234, hello", "[0-9]+", "", ctx)
        eq(m[0], "1234") eq(ctx.pos, 5)
        ctx = { pos = 2 }
        m = ngx.re.match("1234, hello", "[0-9]+", "", ctx)
        eq(m[0], "234") eq(ctx.pos, 5)
        ctx = { pos = 5 }
        m = ngx.re.match("1234, 56", "[0-9]+", "", ctx)
        eq(m[0], "56") eq(ctx.pos, 9)
        -- anchored: must match at the start offset
        eq(ngx.re.match("a1234", "[0-9]+", "a"), nil)
        eq(ngx.re.match("1234a", "[0-9]+", "a")[0], "1234")
        eq(ngx.re.match("xx12", "[0-9]+", "a", { pos = 3 })[0], "12")
        -- res table is filled and returned
        local res = {}
        local r = ngx.re.match("k=v", "(\\w+)=(\\w+)", "jo", nil, res)
        assert(rawequal(r, res)) eq(res[1], "k") eq(res[2], "v")
        -- ^ does not match at a later start offset
        eq(ngx.re.match("ab", "^b", "", { pos = 2 }), nil)
        "##,
    );
}

#[test]
fn re_options() {
    check(
        r##"
        eq(ngx.re.match("a\nb", "^b", "m")[0], "b")
        eq(ngx.re.match("a\nb", "^b"), nil)
        eq(ngx.re.match("a\nb", "a.b", "s")[0], "a\nb")
        eq(ngx.re.match("a\nb", "a.b"), nil)
        eq(ngx.re.match("ABC", "b", "i")[0], "B")
        eq(ngx.re.match("abc", "a b # comment\n c", "x")[0], "abc")
        eq(ngx.re.match("abc", "b", "jo")[0], "b")
        eq(ngx.re.match("abc", "b", "uUdDJ")[0], "b")
        local ok, err = pcall(ngx.re.match, "abc", "b", "z")
        assert(not ok)
        assert(tostring(err):find('unknown flag "z"', 1, true), tostring(err))
        "##,
    );
}

#[test]
fn re_pcre_features() {
    check(
        r##"
        -- backreference
        eq(ngx.re.match("xaay", "(a)\\1")[0], "aa")
        eq(ngx.re.match("<b>x</b>", [[<(\w+)>.*</\1>]])[1], "b")
        -- lookahead / lookbehind
        eq(ngx.re.match("foobar foobaz", "foo(?=baz)", "")[0], "foo")
        eq(ngx.re.find("foobar foobaz", "foo(?=baz)"), 8)
        eq(ngx.re.match("price: $42", [[(?<=\$)\d+]])[0], "42")
        eq(ngx.re.match("abc", "a(?!b)"), nil)
        -- atomic group, non-greedy, classes, escaped slash
        eq(ngx.re.match("aaa", "(?>a+)")[0], "aaa")
        eq(ngx.re.match("<<a>>", "<.+?>")[0], "<<a>")
        eq(ngx.re.match("path/to", [[\w+\/\w+]])[0], "path/to")
        eq(ngx.re.match("ab12", "[[:alpha:]]+")[0], "ab")
        eq(ngx.re.match("x", "(?P<n>x)").n, "x")
        -- D: duplicate names collect the matched groups into a list
        local m = ngx.re.match("b", "(?<n>a)|(?<n>b)", "D")
        eq(type(m.n), "table") eq(#m.n, 1) eq(m.n[1], "b")
        m = ngx.re.match("ab", "(?<n>a)(?<n>b)", "D")
        eq(#m.n, 2) eq(m.n[1], "a") eq(m.n[2], "b")
        "##,
    );
}

#[test]
fn re_invalid_regex_returns_error() {
    check(
        r##"
        local m, err = ngx.re.match("abc", "(")
        eq(m, nil)
        assert(type(err) == "string" and err:find("failed to compile regex", 1, true), err)
        local from, to, err2 = ngx.re.find("abc", "[")
        eq(from, nil) eq(to, nil) assert(type(err2) == "string")
        local it, err3 = ngx.re.gmatch("abc", "(?<")
        eq(it, nil) assert(type(err3) == "string")
        local s, n, err4 = ngx.re.sub("abc", "(", "x")
        eq(s, nil) eq(n, nil) assert(type(err4) == "string")
        local s2, n2, err5 = ngx.re.gsub("abc", "*", "x")
        eq(s2, nil) eq(n2, nil) assert(type(err5) == "string")
        "##,
    );
}

#[test]
fn re_find() {
    check(
        r##"
        local s = "hello, 1234"
        local from, to, err = ngx.re.find(s, "([0-9]+)", "jo")
        eq(from, 8) eq(to, 11) eq(err, nil)
        eq(string.sub(s, from, to), "1234")
        from, to = ngx.re.find(s, "([0-9])([0-9]+)", "jo", nil, 2)
        eq(from, 9) eq(to, 11)
        eq(ngx.re.find(s, "x"), nil)
        -- ctx.pos honoured and updated
        local ctx = { pos = 10 }
        from, to = ngx.re.find("1234, 1234", "[0-9]+", "", ctx)
        eq(from, 10) eq(to, 10) eq(ctx.pos, 11)
        ctx = {}
        from, to = ngx.re.find("a1b22", "[0-9]+", "", ctx)
        eq(from, 2) eq(to, 2) eq(ctx.pos, 3)
        from, to = ngx.re.find("a1b22", "[0-9]+", "", ctx)
        eq(from, 4) eq(to, 5) eq(ctx.pos, 6)
        eq(ngx.re.find("a1b22", "[0-9]+", "", ctx), nil)
        -- nth capture that did not participate, and out of bound
        from, to = ngx.re.find("ab", "(a)(x)?", "", nil, 2)
        eq(from, nil) eq(to, nil)
        local f, t, e = ngx.re.find("ab", "(a)", "", nil, 5)
        eq(f, nil) eq(e, "nth out of bound")
        -- empty match
        from, to = ngx.re.find("abc", "x*")
        eq(from, 1) eq(to, 0)
        "##,
    );
}

#[test]
fn re_gmatch() {
    check(
        r##"
        local it, err = ngx.re.gmatch("hello, world", "([a-z])[a-z]+", "i")
        assert(it, err)
        local m = it()
        eq(m[0], "hello") eq(m[1], "h")
        m = it()
        eq(m[0], "world") eq(m[1], "w")
        eq(it(), nil)
        eq(it(), nil)
        local words = {}
        for m in ngx.re.gmatch("a=1, b=2, c=3", "(?<k>\\w+)=(?<v>\\d+)") do
            words[#words + 1] = m.k .. ":" .. m.v
        end
        eq(table.concat(words, ","), "a:1,b:2,c:3")
        -- empty matches advance by one character
        local n = 0
        for m in ngx.re.gmatch("abc", "x*") do n = n + 1 eq(m[0], "") end
        eq(n, 4)
        local parts = {}
        for m in ngx.re.gmatch("美好生活", ".") do parts[#parts + 1] = m[0] end
        eq(#parts, 4) eq(parts[2], "好")
        "##,
    );
}

#[test]
fn re_sub_and_gsub_templates() {
    check(
        r##"
        local newstr, n, err = ngx.re.sub("hello, 1234", "([0-9])[0-9]", "[$0][$1]")
        eq(newstr, "hello, [12][1]34") eq(n, 1) eq(err, nil)
        newstr, n = ngx.re.sub("hello, 1234", "[0-9]", "${0}00")
        eq(newstr, "hello, 100234") eq(n, 1)
        newstr, n = ngx.re.sub("hello, 1234", "[0-9]", "$$")
        eq(newstr, "hello, $234")
        newstr, n = ngx.re.gsub("hello, world", "([a-z])[a-z]+", "[$0,$1]", "i")
        eq(newstr, "[hello,h], [world,w]") eq(n, 2)
        newstr, n = ngx.re.gsub("a-b", "(?<x>[a-z])", "<${x}>")
        eq(newstr, "<a>-<b>") eq(n, 2)
        -- unmatched and missing groups substitute empty strings
        newstr = ngx.re.gsub("ab", "(a)(x)?", "[$2$9]")
        eq(newstr, "[]b")
        -- no match: subject unchanged, n = 0
        newstr, n = ngx.re.gsub("hello", "x", "y")
        eq(newstr, "hello") eq(n, 0)
        -- bad template
        local s, c, e = ngx.re.sub("abc", "b", "$x")
        eq(s, nil) eq(c, nil) eq(e, "failed to compile the replacement template")
        s, c, e = ngx.re.sub("abc", "b", "${1")
        eq(s, nil) eq(e, "failed to compile the replacement template")
        -- empty matches as OpenResty
        eq(ngx.re.gsub("abc", "x*", "-"), "-a-b-c-")
        eq(ngx.re.gsub("baaac", "a*", "-"), "-b--c-")
        eq(ngx.re.sub("abc", "", "-"), "-abc")
        -- number replacement coerced
        eq(ngx.re.gsub("a1", "[a-z]", 7), "71")
        -- anchored gsub only replaces a leading run
        eq(ngx.re.gsub("aab", "a", "x", "a"), "xxb")
        eq(ngx.re.gsub("baa", "a", "x", "a"), "baa")
        "##,
    );
}

#[test]
fn re_gsub_function() {
    check(
        r##"
        local func = function(m) return "[" .. m[0] .. "," .. m[1] .. "]" end
        local newstr, n = ngx.re.gsub("hello, world", "([a-z])[a-z]+", func, "i")
        eq(newstr, "[hello,h], [world,w]") eq(n, 2)
        newstr, n = ngx.re.sub("hello, world", "(?<w>[a-z]+)", function(m) return m.w:upper() end)
        eq(newstr, "HELLO, world") eq(n, 1)
        -- numbers returned are converted
        eq(ngx.re.gsub("a b", "[a-z]", function(m) return 1 end), "1 1")
        -- nested ngx.re use inside the callback
        eq(ngx.re.gsub("ab cd", "\\w+", function(m) return (ngx.re.gsub(m[0], ".", "$0$0")) end), "aabb ccdd")
        -- a runaway expansion fails instead of exhausting Rust memory
        local ok0, err0 = pcall(ngx.re.gsub, string.rep("a", 20000), "a", string.rep("b", 20000))
        assert(not ok0 and tostring(err0):find("result longer than"), tostring(err0))
        -- errors in the callback propagate
        local ok, err = pcall(ngx.re.gsub, "a", "a", function() error("boom") end)
        assert(not ok and tostring(err):find("boom"), tostring(err))
        "##,
    );
}

#[test]
fn re_binary_subjects() {
    check(
        r##"
        local s = "a\255\254b"
        local from, to = ngx.re.find(s, "b")
        eq(from, 4) eq(to, 4)
        eq(#ngx.re.match(s, "a..")[0], 3)
        eq(ngx.re.gsub(s, "[a-z]", "X"), "X\255\254X")
        local n = 0
        for m in ngx.re.gmatch(s, ".") do n = n + 1 end
        eq(n, 4)
        -- a UTF-8 subject with a start offset inside a character
        local m = ngx.re.match("é1", "[0-9]", "", { pos = 2 })
        eq(m[0], "1")
        "##,
    );
}

#[test]
fn re_cache_is_bounded_and_reused() {
    check(
        r##"
        for i = 1, 3000 do
            local m = ngx.re.match("k" .. i, "k(" .. i .. ")", "jo")
            eq(m[1], tostring(i))
        end
        for i = 1, 100 do eq(ngx.re.find("abc", "b", "jo"), 2) end
        "##,
    );
}

// ------------------------------------------------------------ codecs

#[test]
fn base64() {
    check(
        r##"
        eq(ngx.encode_base64("hello"), "aGVsbG8=")
        eq(ngx.encode_base64("hello", true), "aGVsbG8")
        eq(ngx.encode_base64(""), "")
        eq(ngx.encode_base64(nil), "")
        eq(ngx.encode_base64(123), "MTIz")
        eq(ngx.decode_base64("aGVsbG8="), "hello")
        eq(ngx.decode_base64("aGVsbG8"), "hello")
        eq(ngx.decode_base64(""), "")
        eq(ngx.decode_base64("aGVsbG8!"), nil)
        eq(ngx.decode_base64("a"), nil)
        eq(ngx.decode_base64("aGVsbG8=trailing"), "hello")
        local bin = ""
        for i = 0, 255 do bin = bin .. string.char(i) end
        eq(ngx.decode_base64(ngx.encode_base64(bin)), bin)
        eq(ngx.decode_base64(ngx.encode_base64(bin, true)), bin)
        local ok = pcall(ngx.decode_base64, nil)
        assert(not ok)
        "##,
    );
}

#[test]
fn digests() {
    check(
        r##"
        eq(ngx.md5("hello"), "5d41402abc4b2a76b9719d911017c592")
        eq(ngx.md5(""), "d41d8cd98f00b204e9800998ecf8427e")
        eq(ngx.md5(nil), "d41d8cd98f00b204e9800998ecf8427e")
        local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
        eq(hex(ngx.md5_bin("hello")), "5d41402abc4b2a76b9719d911017c592")
        eq(#ngx.md5_bin("x"), 16)
        eq(hex(ngx.sha1_bin("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d")
        eq(#ngx.sha1_bin(""), 20)
        eq(hex(ngx.hmac_sha1("key", "The quick brown fox jumps over the lazy dog")),
           "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9")
        eq(ngx.encode_base64(ngx.hmac_sha1("", "")), "+9sdGxiqbAgyS31ktx+3Y3BpDh0=")
        eq(ngx.crc32_short("hello"), 907060870)
        eq(ngx.crc32_long("hello"), 907060870)
        eq(ngx.crc32_long("The quick brown fox jumps over the lazy dog"), 1095738169)
        eq(ngx.crc32_short(""), 0)
        "##,
    );
}

#[test]
fn escape_and_unescape_uri() {
    check(
        r##"
        eq(ngx.escape_uri("a b&c=d/é~-_."), "a%20b%26c%3Dd%2F%C3%A9~-_.")
        eq(ngx.escape_uri("a b?c#d%e/f", 0), "a%20b%3Fc%23d%25e/f")
        eq(ngx.escape_uri("a b?c#d%e/f", 2), "a%20b%3Fc%23d%25e%2Ff")
        eq(ngx.escape_uri(""), "")
        eq(ngx.escape_uri(nil), "")
        eq(ngx.escape_uri(12), "12")
        eq(ngx.unescape_uri("b%20r56+7"), "b r56 7")
        eq(ngx.unescape_uri("%C3%A9%2f%2F"), "é//")
        eq(ngx.unescape_uri("100%"), "100%")
        eq(ngx.unescape_uri("%zz%4"), "%zz%4")
        local all = ""
        for i = 0, 255 do all = all .. string.char(i) end
        eq(ngx.unescape_uri(ngx.escape_uri(all)), all)
        "##,
    );
}

#[test]
fn encode_args() {
    check(
        r##"
        eq(ngx.encode_args({foo = 3, ["b r"] = "hello world"}), "b%20r=hello%20world&foo=3")
        eq(ngx.encode_args({a = true, b = false, c = "x"}), "a&c=x")
        eq(ngx.encode_args({baz = {32, "hello"}}), "baz=32&baz=hello")
        eq(ngx.encode_args({baz = {true, false, "v"}}), "baz&baz=v")
        eq(ngx.encode_args({}), "")
        eq(ngx.encode_args({["a&b"] = "c=d"}), "a%26b=c%3Dd")
        local ok, err = pcall(ngx.encode_args, {a = {}, [true] = 1})
        assert(not ok)
        ok, err = pcall(ngx.encode_args, {a = function() end})
        assert(not ok and tostring(err):find("query arg value"), tostring(err))
        "##,
    );
}

#[test]
fn decode_args() {
    check(
        r##"
        local args = ngx.decode_args("a=bar&b=foo")
        eq(args.a, "bar") eq(args.b, "foo")
        args = ngx.decode_args("a=1&a=2&a&b")
        eq(type(args.a), "table") eq(args.a[1], "1") eq(args.a[2], "2") eq(args.a[3], true)
        eq(args.b, true)
        args = ngx.decode_args("x=&%20k=v%20w+z&=skipped&&")
        eq(args.x, "") eq(args[" k"], "v w z") eq(args[""], nil)
        args = ngx.decode_args("a=1&b=2&c=3", 2)
        eq(args.a, "1") eq(args.b, "2") eq(args.c, nil)
        local q = {}
        for i = 1, 150 do q[#q + 1] = "k" .. i .. "=" .. i end
        local s = table.concat(q, "&")
        local n = 0
        for _ in pairs(ngx.decode_args(s)) do n = n + 1 end
        eq(n, 100)
        n = 0
        for _ in pairs(ngx.decode_args(s, 0)) do n = n + 1 end
        eq(n, 150)
        -- round trip
        local t = ngx.decode_args(ngx.encode_args({["a b"] = "c&d", e = {"1", "2"}}))
        eq(t["a b"], "c&d") eq(t.e[2], "2")
        "##,
    );
}

#[test]
fn quote_sql_str() {
    check(
        r##"
        eq(ngx.quote_sql_str("hello"), "'hello'")
        eq(ngx.quote_sql_str("it's"), [['it\'s']])
        eq(ngx.quote_sql_str("a\"b\\c"), [['a\"b\\c']])
        eq(ngx.quote_sql_str("l1\nl2\r\t"), [['l1\nl2\r\t']])
        eq(ngx.quote_sql_str("a\0b"), [['a\0b']])
        eq(ngx.quote_sql_str("\26\8"), [['\Z\b']])
        eq(ngx.quote_sql_str(""), "''")
        eq(ngx.quote_sql_str(42), "'42'")
        "##,
    );
}

// ------------------------------------------------------------ time

#[test]
fn time_functions() {
    check(
        r##"
        eq(ngx.http_time(1290079655), "Thu, 18 Nov 2010 11:27:35 GMT")
        eq(ngx.cookie_time(1290079655), "Thu, 18-Nov-10 11:27:35 GMT")
        eq(ngx.cookie_time(2200000000), "Sun, 18-Sep-2039 23:06:40 GMT")
        eq(ngx.http_time(0), "Thu, 01 Jan 1970 00:00:00 GMT")
        eq(ngx.http_time(951782400), "Tue, 29 Feb 2000 00:00:00 GMT")
        eq(ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"), 1290079655)
        eq(ngx.parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT"), 1290079655)
        eq(ngx.parse_http_time("Thu Nov 18 11:27:35 2010"), 1290079655)
        eq(ngx.parse_http_time("not a date"), nil)
        eq(ngx.parse_http_time(ngx.http_time(1700000000)), 1700000000)

        local now = ngx.now()
        assert(now > 1.6e9, now)
        eq(now * 1000, math.floor(now * 1000 + 0.5), "ms resolution")
        local t = ngx.time()
        eq(t, math.floor(t))
        assert(math.abs(t - now) <= 1)
        assert(math.abs(t - os.time()) <= 2)
        -- cached until update_time
        eq(ngx.now(), now)
        ngx.update_time()
        assert(ngx.now() >= now)
        assert(ngx.today():match("^%d%d%d%d%-%d%d%-%d%d$"), ngx.today())
        assert(ngx.localtime():match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$"))
        eq(ngx.localtime(), ngx.utctime())
        eq(ngx.today(), ngx.utctime():sub(1, 10))
        eq(ngx.utctime(), os.date("!%Y-%m-%d %H:%M:%S", ngx.time()))
        "##,
    );
}

#[test]
fn now_is_cached_and_refreshed() {
    let lua = vm();
    let a: f64 = lua.load("return ngx.now()").eval().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b: f64 = lua.load("return ngx.now()").eval().unwrap();
    assert_eq!(a, b);
    super::refresh_time(&lua);
    let c: f64 = lua.load("return ngx.now()").eval().unwrap();
    assert!(c - a >= 0.015, "{a} {c}");
}

// ------------------------------------------------------------ cjson

#[test]
fn cjson_encode() {
    check(
        r##"
        local cjson = require "cjson"
        eq(cjson.encode({}), "{}")
        eq(cjson.encode(cjson.empty_array), "[]")
        eq(cjson.encode({a = cjson.empty_array}), '{"a":[]}')
        eq(cjson.encode({1, 2, 3}), "[1,2,3]")
        eq(cjson.encode({1, "two", true, false, cjson.null}), '[1,"two",true,false,null]')
        eq(cjson.encode({a = {b = {c = {1, {d = 5}}}}}), '{"a":{"b":{"c":[1,{"d":5}]}}}')
        eq(cjson.encode(5), "5")
        eq(cjson.encode(-5), "-5")
        eq(cjson.encode(10 / 2), "5")
        eq(cjson.encode(0.1), "0.1")
        eq(cjson.encode(1.5), "1.5")
        eq(cjson.encode(-0.0), "-0")
        eq(cjson.encode(1 / 3), "0.33333333333333")
        eq(cjson.encode(123456789012), "123456789012")
        eq(cjson.encode(1e15), "1e+15")
        eq(cjson.encode(1e-5), "1e-05")
        eq(cjson.encode(2 ^ 53), "9.007199254741e+15")
        eq(cjson.encode("a/b\"c\\d\n\r\t\b\f\1\127é"), '"a\\/b\\"c\\\\d\\n\\r\\t\\b\\f\\u0001\\u007fé"')
        eq(cjson.encode(nil), "null")
        eq(cjson.encode(ngx.null), "null")
        eq(cjson.encode(true), "true")
        eq(cjson.encode({[1] = "a", [2] = "b", [4] = "d"}), '["a","b",null,"d"]')
        eq(cjson.encode({[1.5] = "x"}), '{"1.5":"x"}')
        eq(cjson.encode({a = 1}), '{"a":1}')
        -- both keys present, order unspecified
        local s = cjson.encode({a = 1, b = "x"})
        assert(s == '{"a":1,"b":"x"}' or s == '{"b":"x","a":1}', s)
        -- mixed keys make an object with string keys
        s = cjson.encode({1, x = 2})
        assert(s == '{"1":1,"x":2}' or s == '{"x":2,"1":1}', s)
        -- array_mt / empty_array_mt
        eq(cjson.encode(setmetatable({}, cjson.empty_array_mt)), "[]")
        eq(cjson.encode(setmetatable({}, cjson.array_mt)), "[]")
        eq(cjson.encode(setmetatable({1, 2}, cjson.array_mt)), "[1,2]")
        -- encode_empty_table_as_object
        eq(cjson.encode_empty_table_as_object(false), false)
        eq(cjson.encode({}), "[]")
        eq(cjson.encode({a = {}}), '{"a":[]}')
        cjson.encode_empty_table_as_object(true)
        eq(cjson.encode({}), "{}")
        cjson.encode_escape_forward_slash(false)
        eq(cjson.encode("a/b"), '"a/b"')
        cjson.encode_escape_forward_slash(true)
        "##,
    );
}

#[test]
fn cjson_encode_errors() {
    check(
        r##"
        local cjson = require "cjson"
        local safe = require "cjson.safe"
        local function fails(v, msg)
            local ok, err = pcall(cjson.encode, v)
            assert(not ok, "expected an error for " .. tostring(v))
            assert(tostring(err):find(msg, 1, true), tostring(err))
            local r, e = safe.encode(v)
            eq(r, nil)
            assert(e:find(msg, 1, true), e)
        end
        fails(0 / 0, "Cannot serialise number: must not be NaN or Infinity")
        fails(math.huge, "must not be NaN or Infinity")
        fails({f = function() end}, "Cannot serialise function: type not supported")
        fails({[true] = 1}, "Cannot serialise table: table key must be a number or string")
        fails({[1] = 1, [100] = 2}, "Cannot serialise table: excessively sparse array")
        local t = {}
        t.self = t
        fails(t, "Cannot serialise, excessive nesting (1001)")
        local deep = {}
        local cur = deep
        for i = 1, 998 do cur[1] = {} cur = cur[1] end
        assert(cjson.encode(deep))
        "##,
    );
}

#[test]
fn cjson_decode() {
    check(
        r##"
        local cjson = require "cjson"
        local t = cjson.decode('{"a":1,"b":[1,2,{"c":null}],"d":"x\\/y\\u00e9\\ud83d\\ude00","e":true,"f":false}')
        eq(t.a, 1) eq(#t.b, 3) eq(t.b[3].c, cjson.null) eq(t.b[3].c, ngx.null)
        eq(t.d, "x/yé😀") eq(t.e, true) eq(t.f, false)
        eq(cjson.decode("  [ ]  ")[1], nil)
        eq(next(cjson.decode("{}")), nil)
        eq(cjson.decode("5"), 5)
        eq(cjson.decode("-1.5e2"), -150)
        eq(cjson.decode('"s"'), "s")
        eq(cjson.decode("null"), cjson.null)
        eq(cjson.decode('{"1":"a"}')["1"], "a")
        eq(cjson.decode('"\\n\\t\\"\\\\"'), '\n\t"\\')
        -- round trips
        local src = {name = "x", list = {1, 2.5, "three", {nested = true}}, none = cjson.null}
        local back = cjson.decode(cjson.encode(src))
        eq(back.name, "x") eq(back.list[2], 2.5) eq(back.list[4].nested, true) eq(back.none, cjson.null)
        eq(cjson.encode(cjson.decode('[1,"a",null,{"k":[]}]')), '[1,"a",null,{"k":{}}]')
        -- decode_array_with_array_mt keeps empty arrays as arrays
        cjson.decode_array_with_array_mt(true)
        eq(cjson.encode(cjson.decode('{"k":[]}')), '{"k":[]}')
        eq(getmetatable(cjson.decode("[1]")), cjson.array_mt)
        cjson.decode_array_with_array_mt(false)
        "##,
    );
}

#[test]
fn cjson_decode_errors() {
    check(
        r##"
        local cjson = require "cjson"
        local safe = require "cjson.safe"
        local function fails(s, msg)
            local ok, err = pcall(cjson.decode, s)
            assert(not ok, "expected an error for " .. s)
            assert(tostring(err):find(msg, 1, true), tostring(err))
            local r, e = safe.decode(s)
            eq(r, nil)
            eq(e, msg)
        end
        fails("", "Expected value but found T_END at character 1")
        fails("{", "Expected object key string but found T_END at character 2")
        fails("[1,", "Expected value but found T_END at character 4")
        fails("[1 2]", "Expected comma or array end but found T_NUMBER at character 4")
        fails('{"a" 1}', "Expected colon but found T_NUMBER at character 6")
        fails('{"a":1 "b"}', "Expected comma or object end but found T_STRING at character 8")
        fails("{1:2}", "Expected object key string but found T_NUMBER at character 2")
        fails("[1] x", "Expected the end but found invalid token at character 5")
        fails("nul", "Expected value but found invalid token at character 1")
        fails('"abc', "Expected value but found unexpected end of string at character 1")
        fails('"\\q"', "Expected value but found invalid escape code at character 1")
        fails('"\\ud800"', "Expected value but found invalid unicode escape code at character 1")
        fails("01", "Expected value but found invalid number at character 1")
        fails(string.rep("[", 1001), "Found too many nested data structures (1001) at character 1001")
        assert(cjson.decode(string.rep("[", 1000) .. string.rep("]", 1000)))
        local r, e = safe.decode(nil)
        eq(r, nil) assert(e:find("string expected"), e)
        -- safe.decode of valid input
        eq(safe.decode('{"a":2}').a, 2)
        eq(safe.encode({1}), "[1]")
        "##,
    );
}

#[test]
fn cjson_new_instance_has_own_settings() {
    check(
        r##"
        local cjson = require "cjson"
        local other = cjson.new()
        other.encode_empty_table_as_object(false)
        eq(other.encode({}), "[]")
        eq(cjson.encode({}), "{}")
        eq(other.null, cjson.null)
        eq(other.empty_array, cjson.empty_array)
        "##,
    );
}

// ------------------------------------------------------------ bit

#[test]
fn bit_ops() {
    check(
        r##"
        local bit = require "bit"
        eq(bit.tobit(0xffffffff), -1)
        eq(bit.tobit(0xffffffff + 1), 0)
        eq(bit.tobit(2 ^ 40 + 1234), 1234)
        eq(bit.tobit(-1), -1)
        eq(bit.tobit(1.5), 2)
        eq(bit.tobit(2.5), 2)
        eq(bit.tohex(1), "00000001")
        eq(bit.tohex(-1), "ffffffff")
        eq(bit.tohex(0xffffffff), "ffffffff")
        eq(bit.tohex(-1, -4), "FFFF")
        eq(bit.tohex(0x21, 4), "0021")
        eq(bit.tohex(0x87654321, 12), "87654321")
        eq(bit.bnot(0), -1)
        eq(bit.bnot(-1), 0)
        eq(bit.band(0xff, 0x0f), 15)
        eq(bit.band(0x12345678, 0xff), 0x78)
        eq(bit.band(7, 3, 1), 1)
        eq(bit.bor(1, 2, 4, 8), 15)
        eq(bit.bxor(5, 3), 6)
        eq(bit.bxor(1, 1, 1), 1)
        eq(bit.lshift(1, 0), 1)
        eq(bit.lshift(1, 8), 256)
        eq(bit.lshift(1, 31), -2147483648)
        eq(bit.lshift(1, 32), 1)
        eq(bit.lshift(1, 40), 256)
        eq(bit.rshift(256, 8), 1)
        eq(bit.rshift(-1, 28), 15)
        eq(bit.arshift(-256, 8), -1)
        eq(bit.arshift(256, 8), 1)
        eq(bit.rol(0x12345678, 12), 0x45678123)
        eq(bit.ror(0x12345678, 12), 0x67812345)
        eq(bit.bswap(0x12345678), 0x78563412)
        eq(bit.bswap(0x01020304), 0x04030201)
        eq(bit.band("0xff", "15"), 15)
        local ok, err = pcall(bit.band, {}, 1)
        assert(not ok and tostring(err):find("number expected"), tostring(err))
        ok = pcall(bit.bor)
        assert(not ok)
        "##,
    );
}

#[test]
fn installed_functions_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let lua = vm();
    assert_send(&lua);
    let handle = std::thread::spawn(move || {
        let m: String = lua
            .load(r##"return ngx.re.match("abc", "b")[0]"##)
            .eval()
            .unwrap();
        m
    });
    assert_eq!(handle.join().unwrap(), "b");
}

#[test]
fn re_pcre_escapes_translated() {
    check(
        r##"
        eq(ngx.re.match("ab\n", "b\\Z")[0], "b")
        eq(ngx.re.match("ab", "b\\Z")[0], "b")
        eq(ngx.re.match("b\nx", "b\\Z"), nil)
        eq(ngx.re.match("a.b", "\\Qa.b\\E")[0], "a.b")
        eq(ngx.re.match("axb", "\\Qa.b\\E"), nil)
        eq(ngx.re.match("a+b", "a\\Q+\\Eb")[0], "a+b")
        eq(ngx.re.match("x \t y", "x\\h+y")[0], "x \t y")
        eq(ngx.re.match("ab", "a\\Hb"), nil)
        eq(ngx.re.match("a b", "a[\\h]b")[0], "a b")
        eq(ngx.re.match("[x]", "[[]x[]]")[0], "[x]")
        eq(ngx.re.match("]", "[]a]")[0], "]")
        eq(ngx.re.match("b", "[^]a]")[0], "b")
        eq(ngx.re.match("a1", "[[:alpha:]][[:digit:]]")[0], "a1")
        eq(ngx.re.match("a{", "a{")[0], "a{")
        local m = ngx.re.match("xy", "(?'first'x)(y)")
        eq(m.first, "x") eq(m[2], "y")
        m = ngx.re.match("a(b", [[(\()(?<n>b)]])
        eq(m[1], "(") eq(m.n, "b") eq(m[2], "b")
        m = ngx.re.match("ab", [[(?:a)(?<=a)(?<x>b)]])
        eq(m[1], "b") eq(m.x, "b")
        "##,
    );
}
