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

  -- Every extmark of namespace `ns` in `buf`, as drawn: position, span, highlight, virtual text, lines and sign.
  function h.extmarks(buf, ns)
    local function joined(chunks)
      return table.concat(vim.tbl_map(function(chunk)
        return chunk[1]
      end, chunks))
    end
    local found = {}
    for _, mark in ipairs(ns and vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true }) or {}) do
      local _, row, col, details = unpack(mark)
      table.insert(found, {
        row = row,
        col = col,
        end_row = details.end_row or vim.NIL,
        end_col = details.end_col or vim.NIL,
        hl_group = details.hl_group or vim.NIL,
        virt_text = details.virt_text and joined(details.virt_text) or vim.NIL,
        virt_text_hl = details.virt_text and details.virt_text[1][2] or vim.NIL,
        virt_text_pos = details.virt_text_pos or vim.NIL,
        virt_lines = details.virt_lines and vim.tbl_map(joined, details.virt_lines) or vim.NIL,
        sign_text = details.sign_text or vim.NIL,
      })
    end
    return found
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
