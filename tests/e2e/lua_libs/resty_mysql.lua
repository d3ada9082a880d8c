-- A minimal MySQL/MariaDB client with lua-resty-mysql's API (new, set_timeout,
-- connect, query, close, set_keepalive, get_reused_times), written for Portico's
-- tests on cosockets: the client/server protocol 4.1 and mysql_native_password.
local bit = bit
local sub, byte, char, concat = string.sub, string.byte, string.char, table.concat
local sha1_bin = ngx.sha1_bin
local null = ngx.null
local tcp = ngx.socket.tcp
local setmetatable, tonumber = setmetatable, tonumber

local _M = { _VERSION = "0.1-portico-tests" }
local mt = { __index = _M }

local NUMERIC = { [1] = true, [2] = true, [3] = true, [4] = true, [5] = true,
    [8] = true, [9] = true, [13] = true, [246] = true }

local function u16(s, i) return byte(s, i) + byte(s, i + 1) * 256 end
local function u24(s, i) return u16(s, i) + byte(s, i + 2) * 65536 end
local function le(n, len)
    local out = {}
    for i = 1, len do
        out[i] = char(n % 256)
        n = math.floor(n / 256)
    end
    return concat(out)
end

-- A length-encoded integer at i: value, next position (nil value for NULL).
local function lenenc(s, i)
    local f = byte(s, i)
    if f < 0xfb then return f, i + 1 end
    if f == 0xfb then return nil, i + 1 end
    if f == 0xfc then return u16(s, i + 1), i + 3 end
    if f == 0xfd then return u24(s, i + 1), i + 4 end
    return u24(s, i + 1) + u24(s, i + 4) * 16777216 + byte(s, i + 8) * 2 ^ 48, i + 9
end

local function lenenc_str(s, i)
    local n, j = lenenc(s, i)
    if n == nil then return null, j end
    return sub(s, j, j + n - 1), j + n
end

local function cstr(s, i)
    local z = string.find(s, "\0", i, true) or (#s + 1)
    return sub(s, i, z - 1), z + 1
end

function _M.new(self)
    local sock, err = tcp()
    if not sock then return nil, err end
    return setmetatable({ sock = sock }, mt)
end

function _M.set_timeout(self, ms)
    return self.sock:settimeout(ms)
end

local function read_packet(self)
    local head, err = self.sock:receive(4)
    if not head then return nil, "failed to receive packet header: " .. err end
    local len = u24(head, 1)
    self.seq = byte(head, 4)
    if len == 0 then return "" end
    local data, err2 = self.sock:receive(len)
    if not data then return nil, "failed to read packet content: " .. err2 end
    return data
end

local function send_packet(self, payload)
    self.seq = (self.seq + 1) % 256
    return self.sock:send({ le(#payload, 3), char(self.seq), payload })
end

local function xor_str(a, b)
    local out = {}
    for i = 1, #a do out[i] = char(bit.bxor(byte(a, i), byte(b, i))) end
    return concat(out)
end

local function token(password, scramble)
    if password == nil or password == "" then return "" end
    local stage1 = sha1_bin(password)
    local stage2 = sha1_bin(stage1)
    return xor_str(stage1, sha1_bin(scramble .. stage2))
end

local function server_error(packet)
    local errno = u16(packet, 2)
    local msg, state = sub(packet, 4), nil
    if sub(msg, 1, 1) == "#" then
        state = sub(msg, 2, 6)
        msg = sub(msg, 7)
    end
    return nil, msg, errno, state
end

function _M.connect(self, opts)
    local pool = opts.pool or concat({ opts.user or "", opts.database or "",
        opts.host, opts.port or 3306 }, ":")
    local ok, err = self.sock:connect(opts.host, opts.port or 3306, { pool = pool })
    if not ok then return nil, "failed to connect: " .. err end
    local reused = self.sock:getreusedtimes()
    if reused and reused > 0 then return 1 end

    local greeting, err2 = read_packet(self)
    if not greeting then return nil, err2 end
    if byte(greeting, 1) == 0xff then return server_error(greeting) end
    local _, i = cstr(greeting, 2)          -- server version
    i = i + 4                               -- connection id
    local scramble = sub(greeting, i, i + 7)
    i = i + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10  -- filler, caps, charset, status, caps, len, reserved
    scramble = scramble .. sub(greeting, i, i + 11)

    -- LONG_PASSWORD, LONG_FLAG, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS,
    -- SECURE_CONNECTION, PLUGIN_AUTH
    local caps = 0x1 + 0x4 + 0x8 + 0x200 + 0x2000 + 0x8000 + 0x80000
    local auth = token(opts.password, scramble)
    local packet = concat({
        le(caps, 4), le(16777216, 4), char(33), string.rep("\0", 23),
        opts.user or "", "\0", char(#auth), auth,
        opts.database or "", "\0", "mysql_native_password", "\0",
    })
    local sent, err3 = send_packet(self, packet)
    if not sent then return nil, "failed to send client authentication packet: " .. err3 end
    local reply, err4 = read_packet(self)
    if not reply then return nil, err4 end
    local kind = byte(reply, 1)
    if kind == 0xfe then
        -- Auth switch: the server asks again with a new scramble.
        local _, j = cstr(reply, 2)
        local again = token(opts.password, sub(reply, j, j + 19))
        send_packet(self, again)
        reply, err4 = read_packet(self)
        if not reply then return nil, err4 end
        kind = byte(reply, 1)
    end
    if kind == 0xff then return server_error(reply) end
    if kind ~= 0x00 then return nil, "bad authentication reply" end
    return 1
end

function _M.query(self, sql)
    self.seq = -1
    local sent, err = send_packet(self, "\3" .. sql)
    if not sent then return nil, "failed to send query: " .. err end
    local first, err2 = read_packet(self)
    if not first then return nil, err2 end
    local kind = byte(first, 1)
    if kind == 0xff then return server_error(first) end
    if kind == 0x00 then
        local affected, i = lenenc(first, 2)
        local insert_id = lenenc(first, i)
        return { affected_rows = affected, insert_id = insert_id }
    end
    local ncols = lenenc(first, 1)
    local cols = {}
    for c = 1, ncols do
        local def, err3 = read_packet(self)
        if not def then return nil, err3 end
        local i = 1
        local name
        for f = 1, 6 do
            local v
            v, i = lenenc_str(def, i)
            if f == 5 then name = v end
        end
        -- fixed fields: length byte 0x0c, charset (2), length (4), type (1)
        cols[c] = { name = name, numeric = NUMERIC[byte(def, i + 1 + 2 + 4)] }
    end
    local eof = read_packet(self)
    if not eof then return nil, "failed to read the columns' EOF packet" end
    local rows = {}
    while true do
        local row, err4 = read_packet(self)
        if not row then return nil, err4 end
        local first_byte = byte(row, 1)
        if first_byte == 0xfe and #row < 9 then break end
        if first_byte == 0xff then return server_error(row) end
        local r, i = {}, 1
        for c = 1, ncols do
            local v
            v, i = lenenc_str(row, i)
            if v ~= null and cols[c].numeric then v = tonumber(v) end
            r[cols[c].name] = v
        end
        rows[#rows + 1] = r
    end
    return rows
end

function _M.close(self)
    return self.sock:close()
end

function _M.set_keepalive(self, ...)
    return self.sock:setkeepalive(...)
end

function _M.get_reused_times(self)
    return self.sock:getreusedtimes()
end

return _M
