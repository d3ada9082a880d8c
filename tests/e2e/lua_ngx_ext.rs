//! OpenResty API additions of issue 18 as routes see them: `ngx.exit(444)`, response
//! headers set before proxying, `proxy.client_max_body_size`, and the LuaJIT-era
//! modules and globals (`bit`, `ngx.re`, `resty.*`) from a route.

use std::io::{Read, Write};

use crate::lua_common::*;
use crate::support::*;

#[test]
fn exit_444_closes_the_connection_without_a_response() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    lua_route(&gw, "c", "/close", Some(&b), pre("access", "ngx.exit(444)"));
    gw.sync();
    let mut s = std::net::TcpStream::connect(gw.proxy_addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(b.hits(), 0);
}

#[test]
fn headers_set_in_access_reach_the_proxied_response() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "h",
        "/h",
        Some(&b),
        pre(
            "access",
            r#"ngx.header["X-From-Access"] = "yes"; ngx.header["X-Multi"] = {"a", "b"}"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/h");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-from-access"), Some("yes"));
    let multi: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "x-multi")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(multi, vec!["a", "b"]);
    assert_eq!(b.hits(), 1);
}

#[test]
fn read_body_takes_bodies_up_to_client_max_body_size() {
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: "  client_max_body_size: 256k\n".into(),
        ..Default::default()
    });
    let b = Backend::start("b");
    // Answered by Lua: any body up to the limit.
    lua_route(
        &gw,
        "len",
        "/len",
        None,
        pre(
            "access",
            "ngx.req.read_body()\nreturn 200, tostring(#(ngx.req.get_body_data() or ''))",
        ),
    );
    // Proxied after reading: Pingora replays at most 64 KiB.
    lua_route(
        &gw,
        "fwd",
        "/fwd",
        Some(&b),
        pre("access", "ngx.req.read_body()"),
    );
    gw.sync();
    let post = |path: &str, n: usize| {
        http::send(
            gw.proxy_addr(),
            &Request::new("POST", path).body(vec![b'x'; n]),
        )
        .unwrap()
    };
    let r = post("/len", 200 * 1024);
    assert_eq!((r.status, r.text()), (200, (200 * 1024).to_string()));
    assert_eq!(post("/len", 300 * 1024).status, 413);
    let r = post("/fwd", 60 * 1024);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 60 * 1024);
    assert_eq!(post("/fwd", 100 * 1024).status, 413);
    assert_eq!(b.hits(), 1);
}

#[test]
fn luajit_modules_and_globals_from_a_route() {
    let gw = Gateway::start_default();
    lua_route(
        &gw,
        "m",
        "/m",
        None,
        pre(
            "access",
            r#"local split = require("ngx.re").split
               local sha1 = require("resty.sha1"):new()
               sha1:update("abc")
               local hex = require("resty.string").to_hex(sha1:final())
               local parts = split(ngx.var.arg_list, ",")
               return 200, table.concat({ bit.band(12, 10), #parts, hex:sub(1, 6),
                   ngx.encode_args({ q = "a b" }), tostring(ngx.req.get_body_file()) }, " ")"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/m?list=a,b,c");
    assert_eq!(r.status, 200, "{}", gw.logs());
    assert_eq!(r.text(), "8 3 a9993e q=a%20b nil");
}
