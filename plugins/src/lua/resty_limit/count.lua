-- resty.limit.count for Portico: a fixed window of `limit` requests per `window`
-- seconds per key, counted down with the dictionary's atomic incr (init, init_ttl).
local setmetatable, assert = setmetatable, assert

local _M = { _VERSION = "0.09" }
local mt = { __index = _M }
table.freeze(mt)

function _M.new(dict_name, limit, window)
    local dict = ngx.shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(limit > 0 and window > 0)
    return setmetatable({ dict = dict, limit = limit, window = window }, mt)
end

-- 0, remaining | nil, "rejected" | nil, err
function _M.incoming(self, key, commit)
    local remaining
    if commit then
        -- The first request of a window creates the key at `limit` with the window as
        -- its time to live, in the same locked step as the decrement.
        local left, err = self.dict:incr(key, -1, self.limit, self.window)
        if not left then
            return nil, err
        end
        remaining = left
    else
        remaining = (self.dict:get(key) or self.limit) - 1
    end
    if remaining < 0 then
        return nil, "rejected"
    end
    return 0, remaining
end

-- remaining | nil, err
function _M.uncommit(self, key)
    assert(key)
    local remaining, err = self.dict:incr(key, 1)
    if remaining then
        return remaining
    end
    if err == "not found" then
        return self.limit
    end
    return nil, err
end

return _M
