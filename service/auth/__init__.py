"""API keys: hashed storage, scopes, and the request dependency."""
