"""Avro schemas of Ledgerflow events, the single-object codec and schema look-up.

See docs/topics.md for the consumer-facing description of the wire format.
"""
