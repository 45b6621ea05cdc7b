-- wrk script for bench/ingest.py: signed MetaStudio RTMP_STREAM_STATE_CHANGE events, each body
-- unique (thread id + counter + random) so delivery dedup never answers "duplicate".
--
-- Settings come from the environment, because wrk decides whether a delay() hook exists
-- before init(args) runs, so pacing cannot be switched on by script arguments:
--   BENCH_PATH      path + query to POST to (the MSS_A-signed URL, minus scheme and host)
--   BENCH_DELAY_MS  if > 0, wait about this many ms (dithered, wrk truncates to whole ms)
--                   before each next request on a connection: pacing for the half-peak run
--   BENCH_CLOSE     "1": send "Connection: close", one request per connection as from nginx
-- done() prints one line "BENCH_JSON {...}" for ingest.py to parse.

local path = os.getenv("BENCH_PATH") or "/"
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
local close = os.getenv("BENCH_CLOSE") == "1"

local threads = {}
local next_tid = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  n, ok, dup, non200 = 0, 0, 0, 0
  math.randomseed(os.time() * 1000 + tid)
  wrk.headers["Content-Type"] = "application/json"
  if close then wrk.headers["Connection"] = "close" end
end

local STATES = { "CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END" }

function request()
  n = n + 1
  local r = math.random(0, 0x7fffffff)
  -- message is a JSON *string* inside the JSON body, as MetaStudio sends it
  local msg = string.format(
    '{\\"room_id\\":\\"room-%d-%d-%08x\\",\\"job_id\\":\\"job-%d-%d\\",' ..
    '\\"output_url\\":\\"rtmp://127.0.0.1/live/out-%d\\",\\"stream_key\\":\\"sk-%08x\\",\\"state\\":\\"%s\\"}',
    tid, n, r, tid, n, n, r, STATES[n % #STATES + 1])
  return wrk.format("POST", path, nil, '{"event_type":"RTMP_STREAM_STATE_CHANGE","message":"' .. msg .. '"}')
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif body:find('"duplicate"', 1, true) or body:find('"ignored"', 1, true) then
    dup = dup + 1
  else
    ok = ok + 1
  end
end

if pace > 0 then
  local whole = math.floor(pace)
  local frac = pace - whole
  function delay()
    if math.random() < frac then return whole + 1 end
    return whole
  end
end

function done(summary, latency, requests)
  local ok_sum, dup_sum, non200_sum = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_sum = ok_sum + t:get("ok")
    dup_sum = dup_sum + t:get("dup")
    non200_sum = non200_sum + t:get("non200")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok":%d,"dup":%d,"non200":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, ok_sum, dup_sum, non200_sum,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
