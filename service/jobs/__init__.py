"""Background scoring of pending evaluations: leases, recovery after a restart, shutdown."""
