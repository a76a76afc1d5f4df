-- The request both servers are measured with; body and header match what
-- run.py checks once with urllib before loading them.
wrk.method = "POST"
wrk.body = '{"x":[1,2,3]}'
wrk.headers["Content-Type"] = "application/json"
