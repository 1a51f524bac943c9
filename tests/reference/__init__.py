"""Straightforward, batch re-statements of DESIGN.md semantics that tests compare against.

Deliberately naive (sort everything, walk it once): no state, no watermarks, no Kafka.
"""
