-- What the headless drivers share: each runs its steps in one coroutine that sleeps on Neovim's event loop,
-- and ends by writing what it saw as JSON to $DGLSP_OUT and quitting.
--
-- local h = dofile(<this file>)(results); h.run(main): `main` may call h.sleep, h.wait_for and h.press.
return function(results)
  local out = assert(vim.env.DGLSP_OUT, "DGLSP_OUT")
  local h = {}
  local co

  function h.finish(err)
    results.error = err or vim.NIL
    results.messages = vim.api.nvim_exec2("messages", { output = true }).output
    local file = assert(io.open(out, "w"))
    file:write(vim.json.encode(results))
    file:close()
    vim.cmd("qall!")
  end

  function h.sleep(ms)
    vim.defer_fn(function()
      local ok, err = coroutine.resume(co)
      if not ok then
        h.finish(debug.traceback(co, err))
      end
    end, ms)
    coroutine.yield()
  end

  function h.wait_for(condition, timeout_ms)
    for _ = 0, timeout_ms, 20 do
      if condition() then
        return true
      end
      h.sleep(20)
    end
    return condition()
  end

  -- Keys go through mappings ("m") as if typed ("t"); they run when the driver yields.
  function h.press(keys)
    vim.api.nvim_feedkeys(vim.keycode(keys), "mt", false)
    h.sleep(30)
  end

  function h.run(main)
    co = coroutine.create(function()
      local ok, err = xpcall(main, debug.traceback)
      if not ok then
        h.finish(err)
      end
    end)
    vim.schedule(function()
      local ok, err = coroutine.resume(co)
      if not ok then
        h.finish(err)
      end
    end)
  end

  return h
end
