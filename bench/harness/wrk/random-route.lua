-- S5: a uniformly random one of the 10,000 routes (/r/0 ... /r/9999) per request.
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/r/" .. math.random(0, 9999))
end
