"""The cache: fastapi-cache2's backend (Redis or in-process), the scoring-result cache with
in-flight coalescing, and the cached read endpoints."""
