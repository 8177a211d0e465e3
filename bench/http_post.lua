-- wrk script for bench/http_bench.py: POST a small JSON body with a Bearer key, then report
-- the run as one JSON line (the Python driver parses it).
--
-- The key comes from the environment (JQ_BENCH_KEY), never from the command line, so it does
-- not show up in `ps`. JQ_BENCH_BODY overrides the body.

wrk.method = "POST"
wrk.body = os.getenv("JQ_BENCH_BODY") or '{"payload":"bench","max_retries":3}'
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("JQ_BENCH_KEY")
if key and key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. key
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
