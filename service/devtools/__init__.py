"""Programs a developer runs beside the service, not part of it: the simulated LLM and
analyzer, the demo, and the command that scores interview files."""
