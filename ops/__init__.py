"""Operator tooling: the local stack, consumer lag and stall detection, replay, export, topic
creation and the `ledgerflow run` supervisor. Sits above the core (engine), the stream workers
(streams), the projections and the connectors, and may import all of them; none of them imports
ops (pyproject.toml [tool.importlinter]; docs/architecture.md)."""
