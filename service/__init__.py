"""Interview Scorer: an LLM-backed interview scoring microservice."""

__version__ = "0.1.0"
