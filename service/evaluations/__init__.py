"""Evaluations: the scoring of one interview."""
