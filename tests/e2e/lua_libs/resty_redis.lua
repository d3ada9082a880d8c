-- A small Redis client with lua-resty-redis's API (new, set_timeout, connect,
-- commands as methods, set_keepalive, get_reused_times, close), written for Portico's
-- tests: RESP over a cosocket.
local tcp = ngx.socket.tcp
local null = ngx.null
local sub, upper, concat = string.sub, string.upper, table.concat
local setmetatable, tostring, tonumber, select = setmetatable, tostring, tonumber, select

local _M = { _VERSION = "0.1-portico-tests" }
local mt = { __index = _M }

function _M.new(self)
    local sock, err = tcp()
    if not sock then return nil, err end
    return setmetatable({ sock = sock }, mt)
end

function _M.set_timeout(self, ms) return self.sock:settimeout(ms) end
function _M.connect(self, host, port, opts) return self.sock:connect(host, port, opts) end
function _M.set_keepalive(self, ...) return self.sock:setkeepalive(...) end
function _M.get_reused_times(self) return self.sock:getreusedtimes() end
function _M.close(self) return self.sock:close() end

local function read_reply(sock)
    local line, err = sock:receive()
    if not line then return nil, err end
    local kind = sub(line, 1, 1)
    if kind == "+" then return sub(line, 2) end
    if kind == "-" then return false, sub(line, 2) end
    if kind == ":" then return tonumber(sub(line, 2)) end
    if kind == "$" then
        local n = tonumber(sub(line, 2))
        if n < 0 then return null end
        local data, err2 = sock:receive(n + 2)
        if not data then return nil, err2 end
        return sub(data, 1, n)
    end
    if kind == "*" then
        local n = tonumber(sub(line, 2))
        if n < 0 then return null end
        local out = {}
        for i = 1, n do
            local v, err2 = read_reply(sock)
            if v == nil then return nil, err2 end
            out[i] = v
        end
        return out
    end
    return nil, "bad reply"
end

local function command(self, name, ...)
    local n = select("#", ...)
    local req = { "*", n + 1, "\r\n$", #name, "\r\n", name, "\r\n" }
    for i = 1, n do
        local a = tostring((select(i, ...)))
        req[#req + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    local ok, err = self.sock:send(req)
    if not ok then return nil, err end
    return read_reply(self.sock)
end

setmetatable(_M, { __index = function(_, name)
    local cmd = upper(name)
    return function(self, ...) return command(self, cmd, ...) end
end })

return _M
