-- S12's ngx_lua peer: what Portico's key-auth + limit-count + proxy-rewrite route does,
-- in one access_by_lua handler. The 100 consumers' keys are a Lua table built once per
-- worker (APISIX keeps a consumer lookup table the same way); the count is one
-- shared-dict incr per client address with an initial TTL (resty.limit.count's
-- operation); the rewrite sets two request headers and the URI, as the route's
-- proxy-rewrite does.
local _M = {}

local consumers = {}
for i = 1, 100 do
    consumers["key-" .. i] = "consumer" .. i
end

local limit = 1000000000

function _M.access()
    local key = ngx.var.http_apikey
    if not key then
        ngx.status = 401
        ngx.header["Content-Type"] = "application/json"
        ngx.say('{"message":"Missing API key in request"}')
        return ngx.exit(401)
    end
    local consumer = consumers[key]
    if not consumer then
        ngx.status = 401
        ngx.header["Content-Type"] = "application/json"
        ngx.say('{"message":"Invalid API key in request"}')
        return ngx.exit(401)
    end

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

    ngx.req.set_header("X-Gateway", "bench")
    ngx.req.set_header("X-Consumer", consumer)
    ngx.req.set_uri("/rewritten")
end

return _M
