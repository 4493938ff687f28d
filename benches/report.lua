-- benches/report.lua: wrk script of the `report` scenario (benches/run.sh).
--
-- wrk 4 "corrects" its latency histogram for coordinated omission: after the
-- run, every latency of at least twice the mean interval between two requests
-- of a connection (runtime / (requests / connections)) is copied down in
-- steps of that interval, as if the connection had gone on sending at its
-- average rate while it waited. That models one client stuck behind one slow
-- reply, and here it dominates: through odoo-edge (about 2,000 req/s on 16
-- connections, an interval of 8 ms) each request that waited 5 s behind a
-- report on node A adds about 600 made-up samples between 8 ms and 5 s, so a
-- dozen slow requests out of 19,000 gave a "p90 of 2.1 s" where the requests'
-- own p90 was under 9 ms. Through nginx (10 req/s) the correction adds almost
-- nothing. So this script times every request itself.
--
-- Each request carries its send time (CLOCK_MONOTONIC, microseconds, through
-- LuaJIT's FFI) in the query string as bench_t=<us>; mock-odoo echoes the
-- query in its JSON reply, and response() subtracts it from the time the
-- reply is complete. done() prints, after wrk's own output, one line:
--
--   raw latency: requests=N unmatched=N p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=.. in_flight_at_end=N waiting_over_1s_at_end=N oldest_at_end_ms=..
--
-- The percentiles are over the replies that carried bench_t. unmatched:
-- replies without it (not an echo, e.g. an error page). in_flight_at_end:
-- requests still unanswered when wrk stopped (with 16 connections there are
-- always about 16); wrk leaves them out of every figure, so the slowest
-- requests of a run may be missing from the percentiles: waiting_over_1s_at_end
-- counts those that had waited more than 1 s, oldest_at_end_ms the longest wait.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } odoo_edge_bench_timespec;
int clock_gettime(int clk_id, odoo_edge_bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("odoo_edge_bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

-- main state: the threads, to collect their figures in done()
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- per-thread state (globals, so that done() can read them with thread:get)
lat = {}
unmatched = 0
waiting = {} -- send time (us) -> requests sent then and not answered yet
local base, sep

function init(args)
  base = wrk.path
  sep = base:find("?", 1, true) and "&" or "?"
end

-- wrk calls request() once in the first thread's state before the run, to
-- check for pipelining, and never sends that one: it goes into `waiting` like
-- the others, so done() ignores the oldest entry of the first thread.
function request()
  local t = now_us()
  waiting[t] = (waiting[t] or 0) + 1
  return wrk.format(nil, base .. sep .. "bench_t=" .. t)
end

function response(status, headers, body)
  local t = body and body:match("bench_t=(%d+)")
  if t then
    t = tonumber(t)
    lat[#lat + 1] = now_us() - t
    local w = waiting[t]
    if w then waiting[t] = (w > 1) and (w - 1) or nil end
  else
    unmatched = unmatched + 1
  end
end

function done(summary, latency, requests)
  local all, miss, now = {}, 0, now_us()
  local in_flight, stuck, oldest = 0, 0, 0
  for i, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("lat") or {}) do
      all[#all + 1] = v
    end
    miss = miss + (thread:get("unmatched") or 0)
    local sent = {}
    for t, c in pairs(thread:get("waiting") or {}) do
      for _ = 1, c do sent[#sent + 1] = t end
    end
    table.sort(sent)
    for k = (i == 1) and 2 or 1, #sent do -- see request()
      local age = now - sent[k]
      in_flight = in_flight + 1
      if age > 1000000 then stuck = stuck + 1 end
      if age > oldest then oldest = age end
    end
  end
  table.sort(all)
  local n = #all
  local function pct(p) -- nearest rank, in ms
    if n == 0 then return "nan" end
    local i = math.ceil(p / 100 * n)
    if i < 1 then i = 1 end
    return string.format("%.3f", all[i] / 1000)
  end
  io.write(string.format(
    "raw latency: requests=%d unmatched=%d p50_ms=%s p90_ms=%s p99_ms=%s p999_ms=%s max_ms=%s in_flight_at_end=%d waiting_over_1s_at_end=%d oldest_at_end_ms=%.0f\n",
    n, miss, pct(50), pct(90), pct(99), pct(99.9), pct(100), in_flight, stuck, oldest / 1000))
end
