-- S3 on nginx + ngx_lua: runs the same five APISIX-style modules as Portico, in priority
-- order per phase, the way APISIX's plugin loop does ("fake APISIX"). Loaded by
-- init_by_lua_block; conf is the same JSON the harness puts on Portico's route.
local cjson = require "cjson.safe"
local _M = {}
local chains = {}

function _M.init(conf_path, names)
    local f = assert(io.open(conf_path))
    local confs = assert(cjson.decode(f:read("*a")))
    f:close()
    local list = {}
    for _, name in ipairs(names) do
        list[#list + 1] = { mod = require(name), conf = confs[name] }
    end
    table.sort(list, function(a, b) return a.mod.priority > b.mod.priority end)
    for _, phase in ipairs({ "access", "header_filter", "log" }) do
        local chain = {}
        for _, p in ipairs(list) do
            if p.mod[phase] then chain[#chain + 1] = p end
        end
        chains[phase] = chain
    end
end

function _M.run(phase)
    local ctx = ngx.ctx
    for _, p in ipairs(chains[phase]) do
        local code, body = p.mod[phase](p.conf, ctx)
        if code and phase == "access" then
            ngx.status = code
            ngx.say(cjson.encode(body))
            return ngx.exit(code)
        end
    end
end

return _M
