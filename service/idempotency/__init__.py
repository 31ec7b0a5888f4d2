"""Idempotency-Key on POST /v1/evaluations: a retry gets the first response, not a new one."""
