"""Chaos under load: the deployment's servers on loopback, continuous load, faults in turn, and
the checks of what the service promises afterwards (`make chaos`, docs/chaos.md)."""
