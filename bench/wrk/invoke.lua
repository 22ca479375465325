-- wrk script: every request is a Lambda Invoke API call with the same small JSON event
-- (the lambda rows: an echo function under awslambdaric).
wrk.method = "POST"
wrk.path = "/2015-03-31/functions/function/invocations"
wrk.body = '{"hello":"world","n":42}'
wrk.headers["Content-Type"] = "application/json"
