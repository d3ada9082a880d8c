-- resty.limit.conn for Portico: concurrent requests per key, counted with the
-- dictionary's atomic incr; `leaving` (from the log phase) counts a request out.
local setmetatable, assert, floor = setmetatable, assert, math.floor

local _M = { _VERSION = "0.09" }
local mt = { __index = _M }
table.freeze(mt)

function _M.new(dict_name, max, burst, default_conn_delay)
    local dict = ngx.shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(max > 0 and burst >= 0 and default_conn_delay > 0)
    return setmetatable({
        dict = dict,
        max = max,
        burst = burst,
        unit_delay = default_conn_delay,
        committed = false,
    }, mt)
end

function _M.set_conn(self, conn)
    self.max = conn
end

function _M.set_burst(self, burst)
    self.burst = burst
end

function _M.is_committed(self)
    return self.committed
end

-- delay (seconds), conn (concurrency including this request) | nil, "rejected" | nil, err
function _M.incoming(self, key, commit)
    local max, limit = self.max, self.max + self.burst
    self.committed = false
    local conn
    if commit then
        local n, err = self.dict:incr(key, 1, 0)
        if not n then
            return nil, err
        end
        if n > limit then
            -- Over the limit: count this request back out before rejecting it.
            local _, err2 = self.dict:incr(key, -1)
            if err2 then
                return nil, err2
            end
            return nil, "rejected"
        end
        self.committed = true
        conn = n
    else
        conn = (self.dict:get(key) or 0) + 1
        if conn > limit then
            return nil, "rejected"
        end
    end
    if conn > max then
        -- Each full `max` of requests ahead of this one costs one average request time.
        return self.unit_delay * floor((conn - 1) / max), conn
    end
    return 0, conn
end

-- conn (what is left) | nil, err. `req_latency` (seconds) refines the average
-- request time used for delays.
function _M.leaving(self, key, req_latency)
    assert(key)
    local conn, err = self.dict:incr(key, -1)
    if not conn then
        return nil, err
    end
    if req_latency then
        self.unit_delay = (self.unit_delay + req_latency) / 2
    end
    return conn
end

-- conn | nil, err
function _M.uncommit(self, key)
    assert(key)
    self.committed = false
    return self.dict:incr(key, -1)
end

return _M
