"""Batches of interviews, scored in the background with bounded concurrency."""
