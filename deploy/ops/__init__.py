"""Operating the data (issue #15): finding what runs, how far it is, dead letters.

Adapters (offsets, sources, the Kafka side of dlq) over pure logic (progress, letters);
the CLI commands are deploy/commands/ops.py and deploy/commands/dlq.py.
"""
