-- S3 plugin 5 of 5: counts responses by status in a shared dict (a stand-in for a
-- metrics plugin, which nginx does not have built in).
local _M = { version = 0.1, priority = 500, name = "bench-status-count",
    schema = { type = "object" } }

function _M.log(conf, ctx)
    ngx.shared.bench:incr("status:" .. ngx.status, 1, 0)
end

return _M
