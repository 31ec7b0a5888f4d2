"""Human reviews of evaluations: adjusted scores or a decision, with a reason on record."""
