"""The LLM: prompts and the structured-output client."""
