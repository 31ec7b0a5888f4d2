"""The portfolio analyzer: a third-party service, slow and sometimes down."""
