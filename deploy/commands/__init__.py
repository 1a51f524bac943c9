"""CLI command groups, one module per stage so owners do not collide."""
