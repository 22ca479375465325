-- wrk script: every request is a POST with the same 33-byte body
-- (32 'x' and a newline), the "tiny request" of the fork-mode rows.
wrk.method = "POST"
wrk.body = string.rep("x", 32) .. "\n"
wrk.headers["Content-Type"] = "text/plain"
