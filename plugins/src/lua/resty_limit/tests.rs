use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;

use super::super::*;

fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(2),
        max_memory: 32 * 1024 * 1024,
        max_pending_timers: 1024,
    };
    let sizes: BTreeMap<String, String> = [("store", "1m"), ("other", "1m")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LuaVm::new(limits, (0, 1), &SharedDicts::from_config(&sizes).unwrap()).unwrap()
}

/// Runs `src` (a function body) for a request from `remote_addr`; its `return` value
/// (a string) is the output.
fn run(vm: &LuaVm, src: &str) -> String {
    let conn = ConnVars {
        client_ip: "192.0.2.7".parse().ok(),
        ..Default::default()
    };
    let r = LuaRequest::new("GET".into(), "/".into(), None, HeaderMap::new(), conn).shared();
    let f = compile("test", &format!("return function()\n{src}\nend"), None).unwrap();
    let out = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(vm.call(&f, &r));
    match out {
        Ok(CallOutcome::Respond {
            status: 200,
            body: Some(b),
        }) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn req_delays_then_rejects_and_uncommits() {
    let vm = vm();
    let out = run(
        &vm,
        r#"local limit_req = require "resty.limit.req"
        local none, err = limit_req.new("missing", 1, 1)
        assert(none == nil and err == "shared dict not found")
        local lim = assert(limit_req.new("store", 10, 2))
        local key = ngx.var.binary_remote_addr
        assert(#key == 4)
        local out = {}
        for _ = 1, 4 do
            local delay, err = lim:incoming(key, true)
            -- one decimal: a loaded machine drains a few milliseconds between calls
            out[#out + 1] = delay and string.format("%.1f/%.1f", delay, err) or err
        end
        -- a dry run neither consumes nor fails while there is room
        assert(lim:uncommit(key) == true)
        local d = lim:incoming(key, false)
        out[#out + 1] = d and string.format("%.1f", d) or "nil"
        local none2, err2 = lim:uncommit("never seen")
        out[#out + 1] = tostring(none2) .. " " .. err2
        lim:set_burst(100)
        lim:set_rate(1)
        out[#out + 1] = string.format("%.0f", (lim:incoming(key, true)))
        return 200, table.concat(out, ",")"#,
    );
    // 0, 1, 2 excess at rate 10/s: 0, 0.1, 0.2 s; the 4th is over the burst of 2.
    // After uncommit the excess is below 2 again (a little drained meanwhile).
    let parts: Vec<&str> = out.split(',').collect();
    assert_eq!(
        parts[..4],
        ["0.0/0.0", "0.1/1.0", "0.2/2.0", "rejected"],
        "{out}"
    );
    assert_eq!(parts[4], "0.2", "{out}");
    assert_eq!(parts[5], "nil not found", "{out}");
    // excess 1 after uncommit, + 1: a delay of 2 s at 1 req/s after set_rate.
    assert_eq!(parts[6], "2", "{out}");
}

#[test]
fn count_counts_down_per_window() {
    let vm = vm();
    let out = run(
        &vm,
        r#"local limit_count = require "resty.limit.count"
        local lim = assert(limit_count.new("store", 3, 0.2))
        local out = {}
        out[#out + 1] = select(2, lim:incoming("k", false))
        for _ = 1, 4 do
            local delay, err = lim:incoming("k", true)
            out[#out + 1] = delay and (delay .. ":" .. err) or err
        end
        out[#out + 1] = lim:uncommit("k")
        out[#out + 1] = lim:uncommit("unknown")
        ngx.sleep(0.25)
        local delay, remaining = lim:incoming("k", true)
        out[#out + 1] = delay .. ":" .. remaining
        return 200, table.concat(out, ",")"#,
    );
    assert_eq!(out, "2,0:2,0:1,0:0,rejected,0,3,0:2");
}

#[test]
fn conn_delays_rejects_and_leaves() {
    let vm = vm();
    let out = run(
        &vm,
        r#"local limit_conn = require "resty.limit.conn"
        local lim = assert(limit_conn.new("store", 2, 1, 0.5))
        local out = {}
        for _ = 1, 4 do
            local delay, err = lim:incoming("k", true)
            out[#out + 1] = delay and (delay .. ":" .. err) or err
            out[#out + 1] = tostring(lim:is_committed())
        end
        out[#out + 1] = lim:leaving("k", 1.5)   -- 3 -> 2; unit delay (0.5 + 1.5) / 2
        local delay = lim:incoming("k", true)
        out[#out + 1] = delay
        lim:set_conn(10)
        lim:set_burst(0)
        out[#out + 1] = select(2, lim:incoming("k", false))
        return 200, table.concat(out, ",")"#,
    );
    assert_eq!(out, "0:1,true,0:2,true,0.5:3,true,rejected,false,2,1,4");
}

#[test]
fn traffic_combine_commits_all_or_nothing() {
    let vm = vm();
    let out = run(
        &vm,
        r#"local limit_req = require "resty.limit.req"
        local limit_conn = require "resty.limit.conn"
        local limit_count = require "resty.limit.count"
        local limit_traffic = require "resty.limit.traffic"
        local lim1 = assert(limit_req.new("store", 1, 5))
        local lim2 = assert(limit_count.new("other", 2, 60))
        local lim3 = assert(limit_conn.new("other", 10, 0, 0.5))
        local limiters = {lim1, lim2, lim3}
        local keys = {"host", "client", "conn"}
        local out = {}
        for _ = 1, 3 do
            local states = {}
            local delay, err = limit_traffic.combine(limiters, keys, states)
            for i, v in ipairs(states) do
                states[i] = string.format("%.0f", v)
            end
            out[#out + 1] = delay and (string.format("%.0f", delay) .. "[" .. table.concat(states, " ") .. "]") or err
        end
        -- the rejected third attempt left no trace: conn count and req excess unchanged
        out[#out + 1] = ngx.shared.other:get("conn")
        out[#out + 1] = string.format("%.0f", select(2, lim1:incoming("host", false)))
        return 200, table.concat(out, ",")"#,
    );
    assert_eq!(out, "0[0 1 1],1[1 0 2],rejected,2,2");
}

#[test]
fn modules_are_shared_and_read_only() {
    let vm = vm();
    let out = run(
        &vm,
        r#"local a = require "resty.limit.req"
        assert(a == require "resty.limit.req")
        local ok1 = pcall(function() a.new = nil end)
        local lim = a.new("store", 1, 1)
        local ok2 = pcall(function() getmetatable(lim).__index = {} end)
        local ok3 = pcall(require, "resty.limit.nope")
        return 200, tostring(ok1) .. tostring(ok2) .. tostring(ok3)"#,
    );
    assert_eq!(out, "falsefalsefalse");
}
