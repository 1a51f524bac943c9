"""One module per analytical question; each builds its SQL from structure + driver params.

Every module exposes `build(database, ...) -> (sql, params)` (pure, unit-tested) and
`run(wh, ...) -> list[<Row NamedTuple>]` with the same values on both backends.
"""
