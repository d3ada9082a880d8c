-- resty.limit.traffic for Portico: several limiters (req, count, conn, or any object
-- with incoming/uncommit) applied to one request as a whole.
local _M = { _VERSION = "0.09" }

-- delay (the largest of the limiters') | nil, err. `states[i]` receives the second
-- value of limiter i's incoming (excess, remaining, conn).
function _M.combine(limiters, keys, states)
    local n = #limiters
    -- First pass: every limiter checks without committing, except the last one, whose
    -- commit is the only one to undo if a later check fails.
    local last_delay
    for i = 1, n do
        local delay, info = limiters[i]:incoming(keys[i], i == n)
        if not delay then
            return nil, info
        end
        if i == n then
            last_delay = delay
            if states then
                states[n] = info
            end
        end
    end
    -- Second pass: commit the others. A limiter can still reject here (another request
    -- got in between); what this request committed is then taken back.
    local max_delay = last_delay or 0
    for i = 1, n - 1 do
        local delay, info = limiters[i]:incoming(keys[i], true)
        if not delay then
            for j = 1, i - 1 do
                limiters[j]:uncommit(keys[j])
            end
            limiters[n]:uncommit(keys[n])
            return nil, info
        end
        if states then
            states[i] = info
        end
        if delay > max_delay then
            max_delay = delay
        end
    end
    return max_delay
end

return _M
