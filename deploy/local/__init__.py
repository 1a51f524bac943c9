"""deploy/local stage."""
