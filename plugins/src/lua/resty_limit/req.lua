-- resty.limit.req for Portico: a leaky bucket per key in an ngx.shared dictionary.
-- The bucket step itself (read, compute, write) runs in Rust under the dictionary's
-- lock; this file is the object API of lua-resty-limit-traffic.
local bucket_step, bucket_uncommit = ...

local setmetatable, assert = setmetatable, assert

local _M = { _VERSION = "0.09" }
local mt = { __index = _M }
table.freeze(mt)

function _M.new(dict_name, rate, burst)
    local dict = ngx.shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(rate > 0 and burst >= 0)
    return setmetatable({ dict = dict, rate = rate, burst = burst }, mt)
end

function _M.set_rate(self, rate)
    self.rate = rate
end

function _M.set_burst(self, burst)
    self.burst = burst
end

-- delay (seconds), excess (requests above the rate) | nil, "rejected" | nil, err
function _M.incoming(self, key, commit)
    local excess, err = bucket_step(self.dict, key, self.rate, self.burst, commit and true or false)
    if not excess then
        return nil, err
    end
    return excess / self.rate, excess
end

-- true | nil, err
function _M.uncommit(self, key)
    assert(key)
    return bucket_uncommit(self.dict, key, self.rate)
end

return _M
