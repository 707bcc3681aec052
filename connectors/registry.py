"""Every connector the engine knows, declared once (connectors/kit.py).

Adding a connector is one line here. Everything that lists connectors derives from ``CONNECTORS``:
the providers ``/v1/integrations`` accepts, connection tests, URL policies, job/retry/DLQ topics, the
router, the connector workers, rate limits (``LEDGERFLOW_<NAME>_RATE``) and the sandboxes
``ledgerflow run`` starts.
"""

from __future__ import annotations

from connectors import gst_irp, gstin_lookup
from connectors.kit import Connector

CONNECTORS: tuple[Connector, ...] = (gst_irp.CONNECTOR, gstin_lookup.CONNECTOR)

BY_NAME: dict[str, Connector] = {c.name: c for c in CONNECTORS}
if len(BY_NAME) != len(CONNECTORS):
    raise ValueError("two connectors share a name")


def connector(name: str) -> Connector:
    """The connector called ``name``; ``KeyError`` if there is none."""
    return BY_NAME[name]
