-- wrk script of scripts/bench-scale: requests /p/<size>/<n> for n drawn from a working set.
--
--   BENCH_PAGES=N      working set: pages 0 .. N-1 (default 1)
--   BENCH_SIZE=BYTES   page size in the URL (default 5120)
--   BENCH_DIST=uniform every page equally likely (the default)
--   BENCH_DIST=zipf    page of rank k (page k-1) with probability proportional to 1/k^s,
--                      BENCH_ZIPF_S=s (default 1.0); drawn by binary search in the
--                      cumulative distribution, computed once per wrk thread at start
--   BENCH_DIST=seq     every page once in order (0, 1, 2, ... split across wrk threads), then
--                      each thread stops after BENCH_STOP_AFTER responses: the warm-up that
--                      fills a cache with the whole working set (BENCH_THREADS: wrk's -t).
--                      A stopped thread appends a line to BENCH_DONE_FILE: wrk itself runs
--                      until its -d, so the caller ends it (SIGINT) once every thread is done.
--
-- The request text is formatted once (wrk.format with the Host wrk derives from the URL); each
-- request only concatenates the page number, so the client's cost per request is the same for
-- every working set and distribution but seq.

local pages = tonumber(os.getenv("BENCH_PAGES") or "1")
local size = os.getenv("BENCH_SIZE") or "5120"
local dist = os.getenv("BENCH_DIST") or "uniform"
local s = tonumber(os.getenv("BENCH_ZIPF_S") or "1.0")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local done_file = os.getenv("BENCH_DONE_FILE")

local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

local head, tail
local id, step = 0, 1
local next_page = 0
local cdf = nil
local answered = 0

function init(args)
  id = tonumber(wrk.thread:get("id")) or 0
  step = tonumber(os.getenv("BENCH_THREADS") or "1")
  next_page = id
  math.randomseed(os.time() * 1000 + id * 7919 + math.floor(os.clock() * 1e6))
  local marker = "@@PAGE@@"
  local req = wrk.format("GET", "/p/" .. size .. "/" .. marker)
  local at = req:find(marker, 1, true)
  head = req:sub(1, at - 1)
  tail = req:sub(at + #marker)
  if dist == "zipf" then
    cdf = {}
    local total = 0
    for k = 1, pages do
      total = total + 1 / (k ^ s)
      cdf[k] = total
    end
    for k = 1, pages do
      cdf[k] = cdf[k] / total
    end
  end
end

local function zipf_page()
  local u = math.random()
  local lo, hi = 1, pages
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo - 1
end

function request()
  local n
  if dist == "zipf" then
    n = zipf_page()
  elseif dist == "seq" then
    n = next_page % pages
    next_page = next_page + step
  else
    n = math.random(0, pages - 1)
  end
  return head .. n .. tail
end

if dist == "seq" then
  function response(status, headers, body)
    answered = answered + 1
    if stop_after > 0 and answered == stop_after then
      if done_file then
        local f = io.open(done_file, "a")
        f:write(id, "\n")
        f:close()
      end
      wrk.thread:stop()
    end
  end
end
