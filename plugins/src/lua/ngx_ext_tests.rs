//! The OpenResty API additions of issue 18 as a sandboxed VM runs them: binary body
//! chunks, `get_body_file`, the `bit` global, built-in modules through `require`.

use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::phase::Phase;

fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(2),
        max_memory: 32 * 1024 * 1024,
        max_pending_timers: 1024,
    };
    LuaVm::new(limits, (0, 1), &SharedDicts::default()).unwrap()
}

fn req(phase: Phase) -> SharedRequest {
    let r = LuaRequest::new(
        "GET".into(),
        "/".into(),
        None,
        HeaderMap::new(),
        ConnVars::default(),
    )
    .shared();
    r.lock().phase = phase;
    r
}

#[test]
fn body_filter_may_set_a_binary_chunk() {
    let vm = vm();
    let r = req(Phase::BodyFilter);
    r.lock().chunk = Some(bytes::Bytes::from_static(b"x"));
    let f = compile(
        "f",
        "return function() ngx.arg[1] = string.char(0xff, 0, 0xfe) .. ngx.arg[1] end",
        None,
    )
    .unwrap();
    assert_eq!(vm.call_sync(&f, &r).unwrap(), CallOutcome::Continue);
    assert_eq!(r.lock().chunk.as_deref(), Some(&b"\xff\x00\xfex"[..]));
}

#[test]
fn luajit_globals_and_builtin_modules_in_the_sandbox() {
    let vm = vm();
    let r = req(Phase::Access);
    let code = r#"
        local re = require "ngx.re"
        local sha = require("resty.sha256"):new()
        sha:update("abc")
        local hex = require("resty.string").to_hex(sha:final())
        local parts = re.split("a,b", ",")
        return function()
            local t = table.new(0, 4)
            t.a = 1
            return 200, table.concat({
                tostring(bit.bor(1, 2)), tostring(ngx.req.get_body_file()),
                parts[2], hex:sub(1, 8), tostring(table.nkeys(t)),
                tostring(ngx.null == ngx.null), ngx.encode_args({ a = "b c" }),
            }, " ")
        end"#;
    let f = compile("f", code, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(vm.call(&f, &r)).unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 200,
            body: Some(b"3 nil b ba7816bf 1 true a=b%20c".to_vec())
        }
    );
}
