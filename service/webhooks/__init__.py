"""Signed webhook deliveries when an evaluation or a batch finishes."""
