"""Drop-off alerting (DESIGN.md "Drop-off alert").

- `evaluator`: pure, incremental window/baseline/binomial evaluation over "step reached"
  observations and watermark advances; state is orjson bytes per (journey, step).
- `webhooks`: payloads (generic JSON, Slack-compatible) and HMAC signing/verification.
- `delivery`: async webhook dispatcher with retries, backoff, spool and dead-letter.
- `service`: fans alert records out to the warehouse, the alerts topic and webhooks.
"""
