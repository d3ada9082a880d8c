-- S3 plugin 2 of 5: a local request counter per consumer in a shared dict, refusing
-- above conf.count (the benchmark sets a limit it never reaches).
local _M = { version = 0.1, priority = 1002, name = "bench-limit-count",
    schema = { type = "object", properties = { count = { type = "integer" } }, required = { "count" } } }

function _M.access(conf, ctx)
    local n = ngx.shared.bench:incr("lc:" .. (ctx.consumer or "-"), 1, 0)
    if n and n > conf.count then
        return 429, { message = "rate limited" }
    end
end

return _M
