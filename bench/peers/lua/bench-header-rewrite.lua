-- S3 plugin 3 of 5: request header rewrite (adds the consumer and a fixed header).
local _M = { version = 0.1, priority = 1008, name = "bench-header-rewrite",
    schema = { type = "object", properties = { header = { type = "string" }, value = { type = "string" } } } }

function _M.access(conf, ctx)
    ngx.req.set_header("X-Consumer", ctx.consumer)
    ngx.req.set_header(conf.header, conf.value)
    ngx.req.clear_header("apikey")
end

return _M
