"""Follow-up emails: a durable outbox, its delivery, the backends and the templates."""
