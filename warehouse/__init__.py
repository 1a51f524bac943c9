"""The warehouse stage: ClickHouse schema, writers and one query module per question.

Two backends behind one port (warehouse.backend.Warehouse): a ClickHouse server via
clickhouse-driver, and the embedded chdb engine. One SQL dialect runs on both.
"""
