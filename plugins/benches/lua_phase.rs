//! Per-phase overhead of one trivial Lua plugin: what a request pays for running a
//! function the way each phase runs it (synchronously in header/body filters and the
//! balancer; in rewrite/access/log as a plain call, or as a coroutine when the code
//! names a yielding API), plus a realistic access snippet and
//! the fixed cost of building the request's Lua view.
//!
//! `cargo bench -p portico-plugins --bench lua_phase`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use portico_plugins::lua::{
    compile, method_name, ConnVars, LuaLibraries, LuaLimits, LuaRequest, LuaVm, RequestLine,
    SharedDicts,
};
use portico_plugins::Phase;

fn request() -> LuaRequest {
    let mut h = HeaderMap::new();
    h.insert("host", "example.com".parse().expect("static header"));
    h.insert("user-agent", "bench".parse().expect("static header"));
    h.insert("x-user", "alice".parse().expect("static header"));
    LuaRequest::new(
        "GET".into(),
        "/api/items".into(),
        Some("id=7".into()),
        h,
        ConnVars::default(),
    )
}

fn bench(c: &mut Criterion) {
    let vm = LuaVm::new(LuaLimits::default(), (0, 1), &SharedDicts::default()).expect("create VM");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let trivial =
        compile("bench.trivial", "return function(conf, ctx) end", None).expect("compile");
    // Naming a yielding API (never called) makes the call a coroutine.
    let yielding = compile(
        "bench.yielding",
        "return function(conf, ctx) if conf == 1 then ngx.sleep(0) end end",
        None,
    )
    .expect("compile");
    let access = compile(
        "bench.access",
        r#"return function(conf, ctx)
            local user = ngx.var.http_x_user
            if not user then return ngx.exit(403) end
            ngx.req.set_header("X-Checked-User", user)
        end"#,
        None,
    )
    .expect("compile");
    // S3's CORS plugin: three response headers set through `ngx.header`.
    let cors = compile(
        "bench.cors",
        r#"return function(conf, ctx)
            ngx.header["Access-Control-Allow-Origin"] = "*"
            ngx.header["Access-Control-Allow-Methods"] = "GET,POST,PUT,DELETE"
            ngx.header["Access-Control-Max-Age"] = "3600"
        end"#,
        None,
    )
    .expect("compile");

    // What the gateway does at a request's first Lua phase: the request line, a copy of
    // the header map it parsed, the connection's variables, and the shared handle.
    let headers = request().headers;
    let started = std::time::Instant::now();
    let libraries = Arc::new(LuaLibraries::default());
    c.bench_function(
        "request view, as the gateway makes it (three headers)",
        |b| {
            b.iter(|| {
                black_box(
                    LuaRequest::arrived(
                        RequestLine {
                            method: method_name(&http::Method::GET),
                            uri: "/api/items".to_string(),
                            args: Some("id=7".to_string()),
                        },
                        headers.clone(),
                        ConnVars {
                            host: "example.com".to_string(),
                            ..ConnVars::default()
                        },
                        started,
                        Arc::clone(&libraries),
                    )
                    .shared(),
                )
            })
        },
    );
    let req = request().shared();
    req.lock().phase = Phase::HeaderFilter;
    c.bench_function(
        "trivial function, sync (header_filter/body_filter/balancer)",
        |b| b.iter(|| black_box(vm.call_sync(&trivial, &req).expect("call"))),
    );
    c.bench_function(
        "header_filter: set three response headers (S3's CORS)",
        |b| b.iter(|| black_box(vm.call_sync(&cors, &req).expect("call"))),
    );
    req.lock().phase = Phase::Access;
    c.bench_function(
        "trivial function, plain call (rewrite/access/log, no yielding API named)",
        |b| b.iter(|| black_box(rt.block_on(vm.call(&trivial, &req)).expect("call"))),
    );
    c.bench_function(
        "trivial function, coroutine (rewrite/access/log, names ngx.sleep)",
        |b| b.iter(|| black_box(rt.block_on(vm.call(&yielding, &req)).expect("call"))),
    );
    c.bench_function("access: read a header, set a header", |b| {
        b.iter(|| black_box(rt.block_on(vm.call(&access, &req)).expect("call")))
    });
    // A request's first call: its view, `ngx.ctx` when the function uses it, and
    // dropping it all at the end.
    let uses_ctx = compile(
        "bench.uses_ctx",
        "return function(conf, ctx) ctx.seen = true end",
        None,
    )
    .expect("compile");
    for (name, f) in [
        ("new request, first call of a function using ctx", &uses_ctx),
        (
            "new request, first call of function(conf, ctx) not using ctx",
            &trivial,
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let req = request().shared();
                req.lock().phase = Phase::Access;
                black_box(rt.block_on(vm.call(f, &req)).expect("call"))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
