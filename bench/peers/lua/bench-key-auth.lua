-- S3 plugin 1 of 5: key authentication against the consumers in conf.keys
-- (100 consumers). The lookup table is built once per conf table.
local _M = { version = 0.1, priority = 2500, name = "bench-key-auth",
    schema = { type = "object", properties = { keys = { type = "array" } }, required = { "keys" } } }

local lookup = setmetatable({}, { __mode = "k" })

function _M.access(conf, ctx)
    local byKey = lookup[conf]
    if not byKey then
        byKey = {}
        for i, k in ipairs(conf.keys) do byKey[k] = "consumer" .. i end
        lookup[conf] = byKey
    end
    local consumer = byKey[ngx.var.http_apikey or ""]
    if not consumer then
        return 401, { message = "Invalid API key in request" }
    end
    ctx.consumer = consumer
end

return _M
