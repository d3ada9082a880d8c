-- S3: requests carry one of the 100 consumers' keys, at random.
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/", { apikey = "key-" .. math.random(1, 100) })
end
