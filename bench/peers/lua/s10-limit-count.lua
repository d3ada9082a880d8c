-- S10's ngx_lua peer: count the request per client address in a shared dict, as
-- resty.limit.count does (one incr with an initial value and TTL), and say what is left.
local limit = 1000000000
local used, err = ngx.shared.limits:incr(ngx.var.binary_remote_addr, 1, 0, 60)
if not used then
    ngx.log(ngx.ERR, "limit count: ", err)
    return ngx.exit(500)
end
if used > limit then
    return ngx.exit(503)
end
ngx.header["X-RateLimit-Limit"] = limit
ngx.header["X-RateLimit-Remaining"] = limit - used
