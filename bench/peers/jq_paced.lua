-- wrk script for bench/peers/jq.py: like bench/http_post.lua (POST a JSON body with a Bearer key
-- from JQ_BENCH_KEY, report one JSON line), but every connection waits JQ_BENCH_DELAY_MS before
-- each request, so the offered rate is about connections * 1000 / delay: a latency reading at a
-- chosen fraction of the peak rather than at saturation.

wrk.method = "POST"
wrk.body = os.getenv("JQ_BENCH_BODY") or '{"payload":"bench","max_retries":3}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("JQ_BENCH_KEY")
if key and key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. key
end
local pause = tonumber(os.getenv("JQ_BENCH_DELAY_MS") or "10")

function delay()
   return pause
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '\nJQ_BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
      '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
