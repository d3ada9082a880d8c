-- S3 plugin 4 of 5: CORS response headers.
local _M = { version = 0.1, priority = 4000, name = "bench-cors",
    schema = { type = "object", properties = { origin = { type = "string" } } } }

function _M.header_filter(conf, ctx)
    ngx.header["Access-Control-Allow-Origin"] = conf.origin
    ngx.header["Access-Control-Allow-Methods"] = "GET,POST,PUT,DELETE"
    ngx.header["Access-Control-Max-Age"] = "3600"
end

return _M
