//! `require "resty.http"`: the `request_uri` subset of lua-resty-http, non-blocking, on
//! Pingora's pooled HTTP/1.1 connector through the shared `portico-outbound` client.
//!
//! `request_uri` is an mlua async function: while it waits for DNS, the connection or
//! the response, its coroutine is suspended and the worker thread serves other requests
//! (the CPU budget counts only while Lua runs). Connections are kept alive in one
//! process-wide pool, keyed by resolved address, scheme, SNI and verification settings.
//! Network failures return `nil, err` with lua-resty-http's (cosocket's) wording;
//! calling it where Lua cannot yield (header_filter, body_filter) raises a Lua error.

mod client;
mod params;
mod uri;

use mlua::{Function, Lua, Table, Value};

use client::{execute, into_lua};
use params::prepare;
use uri::parse_uri;

const REGISTRY_KEY: &str = "portico.resty.http";

/// The `resty.http` module table (built once per VM; later calls return the same table).
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    if let Value::Table(t) = lua.named_registry_value::<Value>(REGISTRY_KEY)? {
        return Ok(t);
    }
    let raw = lua.create_async_function(raw_request)?;
    let parse = lua.create_function(|lua, uri: String| match parse_uri(&uri) {
        Ok(u) => {
            let t = lua.create_table()?;
            t.raw_push(if u.tls { "https" } else { "http" })?;
            t.raw_push(u.host)?;
            t.raw_push(u.port)?;
            t.raw_push(u.path)?;
            t.raw_push(u.query.unwrap_or_default())?;
            Ok((Value::Table(t), None))
        }
        Err(e) => Ok((Value::Nil, Some(e))),
    })?;
    let coroutine: Table = lua.globals().get("coroutine")?;
    let isyieldable: Function = coroutine.get("isyieldable")?;
    let make: Function = lua
        .load(LUA_CLIENT)
        .set_name("=resty.http")
        .into_function()?;
    let (m, client, client_mt, headers_mt): (Table, Table, Table, Table) =
        make.call((raw, isyieldable, parse))?;
    // Shared by every plugin on the VM: read-only, like the other built-in modules.
    for t in [&m, &client, &client_mt, &headers_mt] {
        t.set_readonly(true);
    }
    lua.set_named_registry_value(REGISTRY_KEY, &m)?;
    Ok(m)
}

/// The client object and the header-table metatable, in Lua. `request_uri` checks that
/// it may yield before calling the async Rust function, so a sync phase gets a clear
/// error instead of Luau's "attempt to yield across metamethod/C-call boundary".
const LUA_CLIENT: &str = r#"
local raw_request, isyieldable, parse_uri = ...
local type, tonumber, error, rawget, rawset, setmetatable, lower =
    type, tonumber, error, rawget, rawset, setmetatable, string.lower

local headers_mt = {
    __index = function(t, k)
        if type(k) == "string" then return rawget(t, lower(k)) end
        return nil
    end,
    __newindex = function(t, k, v)
        if type(k) == "string" then k = lower(k) end
        rawset(t, k, v)
    end,
}

local client = {}
local unsupported = {
    connect = true, request = true, request_pipeline = true, ssl_handshake = true,
    proxy_request = true, proxy_response = true, set_proxy_options = true,
    get_client_body_reader = true, read_response = true, send_request = true,
    tcp_only = true, get_reused_times = true, set_keepalive_pool = true,
}
local client_mt = {
    __index = function(_, k)
        local f = client[k]
        if f ~= nil then return f end
        if unsupported[k] then
            return function()
                error("resty.http: httpc:" .. k .. "() is not supported by Portico; "
                    .. "use httpc:request_uri(uri, params)", 2)
            end
        end
        return nil
    end,
}

local function millis(v, what, level)
    if v == nil then return nil end
    local n = tonumber(v)
    if n == nil or n ~= n or n < 0 then
        error("resty.http: bad " .. what .. " (milliseconds expected, got " .. type(v) .. ")", level)
    end
    return n
end

function client.set_timeout(self, timeout)
    local t = millis(timeout, "timeout", 3)
    if t ~= nil then
        self.connect_timeout, self.send_timeout, self.read_timeout = t, t, t
    end
    return 1
end

function client.set_timeouts(self, connect, send, read)
    self.connect_timeout = millis(connect, "connect timeout", 3) or self.connect_timeout
    self.send_timeout = millis(send, "send timeout", 3) or self.send_timeout
    self.read_timeout = millis(read, "read timeout", 3) or self.read_timeout
    return 1
end

function client.set_keepalive(self) return 1 end
function client.close(self) return 1 end

function client.parse_uri(self, uri)
    if type(uri) ~= "string" then return nil, "bad uri: " .. tostring(uri) end
    return parse_uri(uri)
end

function client.request_uri(self, uri, params)
    if type(self) ~= "table" then
        error("resty.http: use httpc:request_uri(uri, params), with a colon", 2)
    end
    if not isyieldable() then
        error("resty.http: request_uri cannot run here: this code cannot yield "
            .. "(header_filter and body_filter run synchronously, as in OpenResty "
            .. "where cosockets are disabled there)", 2)
    end
    if type(uri) ~= "string" then return nil, "bad uri: " .. tostring(uri) end
    if params ~= nil and type(params) ~= "table" then
        error("resty.http: params must be a table, got " .. type(params), 2)
    end
    local res, err = raw_request(uri, params, self.connect_timeout, self.send_timeout,
        self.read_timeout)
    if not res then return nil, err end
    setmetatable(res.headers, headers_mt)
    return res
end

local http = { _VERSION = "0.17.1-portico" }
function http.new()
    return setmetatable({}, client_mt)
end

return http, client, client_mt, headers_mt
"#;

/// The async Rust half of `httpc:request_uri` (the Lua half checked yieldability).
/// Returns `res` or `nil, err`.
async fn raw_request(
    lua: Lua,
    (uri, params, connect, send, read): (
        String,
        Option<Table>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ),
) -> mlua::Result<(Value, Option<String>)> {
    let prepared = match prepare(&lua, &uri, params.as_ref(), [connect, send, read])? {
        Ok(p) => p,
        Err(e) => return Ok((Value::Nil, Some(e))),
    };
    match execute(prepared).await {
        Ok(resp) => Ok((Value::Table(into_lua(resp, &lua)?), None)),
        Err(e) => Ok((Value::Nil, Some(e))),
    }
}

#[cfg(test)]
mod tests;
