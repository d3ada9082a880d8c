-- S4: a random chash key per request (?x=N), the same for every peer.
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/?x=" .. math.random(1, 1000000000))
end
