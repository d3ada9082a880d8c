//! Database clients written in Lua on cosockets, uploaded as library modules
//! (`/apisix/admin/lua_modules/...`) and required from routes the way OpenResty code
//! requires lua-resty-redis and lua-resty-mysql: a Redis client against a real
//! `redis-server`, and the overview seed's `access_by_lua` MySQL check against a real
//! MariaDB. The clients are the tests' own (tests/e2e/lua_libs/), written to those
//! libraries' documented API.

use crate::lua_common::*;
use crate::support::*;

const RESTY_REDIS: &str = include_str!("lua_libs/resty_redis.lua");
const RESTY_MYSQL: &str = include_str!("lua_libs/resty_mysql.lua");

fn upload(gw: &Gateway, name: &str, code: &str) {
    let (status, _, body) = gw.admin(
        "PUT",
        &format!("/lua_modules/{name}"),
        Some(json!({"code": code, "desc": "test client"})),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
}

#[test]
fn an_uploaded_redis_module_pools_its_connections() {
    let redis = RedisServer::start();
    let gw = lua_gateway(1, LuaOpts::default());
    upload(&gw, "resty.redis", RESTY_REDIS);
    let body = format!(
        r#"local redis = require "resty.redis"
local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", {port})
if not ok then return 500, "failed to connect: " .. err end
local n = red:incr("visits")
assert(red:set("dog", "an animal"))
local dog = red:get("dog")
local none = red:get("cat")
local list = red:mget("dog", "cat")
local reused = red:get_reused_times()
local ok2, err2 = red:set_keepalive(10000, 100)
if not ok2 then return 500, "failed to set keepalive: " .. err2 end
return 200, table.concat({{n, dog, tostring(none == ngx.null), #list, reused}}, "|")"#,
        port = redis.port
    );
    lua_route(&gw, "redis", "/redis", None, pre("access", &body));
    gw.sync();
    let first = gw.proxy_get("/redis");
    assert_eq!(first.text(), "1|an animal|true|2|0");
    let second = gw.proxy_get("/redis");
    assert_eq!(
        second.text(),
        "2|an animal|true|2|1",
        "reused from the pool"
    );
}

/// The seed's code (docs: /work/shared/reference/openresty-overview.txt), unchanged
/// but for the port: the test's server listens on an ephemeral one, not 3306.
const SEED_ACCESS: &str = r#"local mysql = require "resty.mysql"
local db, err = mysql:new()
if not db then
ngx.log(ngx.ERR, "failed to instantiate mysql: ", err)
return ngx.exit(500)
end
db:set_timeout(1000) -- 1 sec
local ok, err = db:connect{
host = "127.0.0.1",
port = 3306,
database = "auth_db",
user = "user",
password = "pass"
}
if not ok then
ngx.log(ngx.ERR, "failed to connect: ", err)
return ngx.exit(500)
end
local username = ngx.var.arg_user
local password = ngx.var.arg_pass
local quoted_username = ngx.quote_sql_str(username)
local quoted_password = ngx.quote_sql_str(password)
local res, err = db:query("SELECT id FROM users WHERE username = " .. quoted_username .. " AND password = " .. quoted_password, 100)
if not res then
ngx.log(ngx.ERR, "bad result: ", err)
return ngx.exit(403)
elseif #res > 0 then
-- Auth successful
else
return ngx.exit(401)
end
db:close()"#;

#[test]
fn the_overview_seeds_mysql_access_check_runs_against_mariadb() {
    let db = MariaDb::start(
        "CREATE DATABASE auth_db;
         CREATE USER 'user'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pass');
         GRANT ALL ON auth_db.* TO 'user'@'%';
         CREATE TABLE auth_db.users (id INT PRIMARY KEY, username VARCHAR(64), password VARCHAR(64));
         INSERT INTO auth_db.users VALUES (7, 'alice', 'secret'), (8, 'bob', 'it''s');",
    );
    let b = Backend::start("backend");
    let gw = lua_gateway(1, LuaOpts::default());
    upload(&gw, "resty.mysql", RESTY_MYSQL);
    let code = SEED_ACCESS.replace("port = 3306", &format!("port = {}", db.port));
    lua_route(
        &gw,
        "protected",
        "/protected",
        Some(&b),
        pre("access", &code),
    );
    gw.sync();

    let ok = gw.proxy_get("/protected?user=alice&pass=secret");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.backend().as_deref(),
        Some("backend"),
        "proxied to the upstream"
    );
    // A quote in the password is escaped by ngx.quote_sql_str, not injected. (Like
    // nginx's `$arg_pass`, `ngx.var.arg_pass` is not URI-decoded: the quote is sent raw.)
    let quoted = gw.proxy_get("/protected?user=bob&pass=it's");
    assert_eq!(quoted.status, 200, "{}", quoted.text());
    assert_eq!(gw.proxy_get("/protected?user=alice&pass=wrong").status, 401);
    let injection = gw.proxy_get("/protected?user=alice&pass='OR'1'='1");
    assert_eq!(
        injection.status, 401,
        "the injection attempt is a plain wrong password"
    );
    // A failing query answers 403 (the seed's `bad result` branch).
    db.sql("DROP TABLE auth_db.users").expect("drop");
    assert_eq!(
        gw.proxy_get("/protected?user=alice&pass=secret").status,
        403
    );
    wait_log_line(&gw, &["bad result", "users"]);
}
