-- S2: one access plugin, the same text in nginx's access_by_lua_block and in Portico's
-- serverless-pre-function (phase access): read a header, refuse or set a header.
if ngx.var.http_x_block == "1" then
    return ngx.exit(403)
end
ngx.req.set_header("X-Lua", "1")
