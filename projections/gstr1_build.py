"""Building one period's GSTR-1 from the ``gst_outward_supplies`` projection: the generation path
of ``POST /v1/gst/gstr1/generate`` (engine/api/gstr1.py) and of the bench (bench/gstr1.py), so the
bench measures what the endpoint does.

The period is streamed from the projection into the builder (engine/tax/gstr1.py) and each document
is written to the generation's snapshot as it passes (engine/tax_return_snapshots.py): a month of
100,000 documents is never held at once. This module loads only the database layer, the builder and
the projection's read side (not the API or the event store): the generation's memory is budgeted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from engine import db
from engine.tax import gstr1
from engine.tax_return_snapshots import snapshot
from projections.gst_outward_supplies import iter_supplies

Changes = tuple[
    Sequence[gstr1.Amendment], Sequence[gstr1.SupplyDocument], Mapping[str, Sequence[Mapping[str, Any]]]
]
"""What changed in filed periods (engine/api/gstr1.py ``changes_since_filing``): amendments, documents
of a filed month the filed return never saw, and each changed month's b2cs rows as filed."""

NO_CHANGES: Changes = ((), (), {})


def build_return(
    pool: ConnectionPool, tenant_id: UUID, gstin: str, period: str, changes: Changes = NO_CHANGES
) -> gstr1.Gstr1Return:
    """The period's return, with ``changes``; what it was built from is kept as the snapshot of its
    content (the "as filed" of later amendments once this version is filed)."""
    amendments, late, filed_b2cs = changes
    with snapshot(pool, tenant_id, gstin, period) as snap:
        with db.transaction(pool) as conn:
            documents = chain(iter_supplies(conn, tenant_id, gstin, period), late)
            built = gstr1.build_gstr1(
                gstin, period, snap.tee(documents), amendments=amendments, filed_b2cs=filed_b2cs
            )
        for change in amendments:
            snap.write(change.amended, "amended")
        snap.content_hash = built.content_hash
    return built


__all__ = ["NO_CHANGES", "Changes", "build_return"]
