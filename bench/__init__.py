"""The throughput benchmark: the service against a sync and a naive-async reference design."""
