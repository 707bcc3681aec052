"""Where the ``gstn-returns`` connector may send a tenant's GSP credentials in production.

Empty on purpose: the GST network's returns API is served only to GSPs (GST Suvidha Providers), each
behind its own host, and none has been confirmed for this deployment yet. A host is added here, with
its source, when a tenant's GSP is signed up. Until then only ``environment: sandbox`` works (our
``connectors/gstn_returns/sandbox.py``), which only a development deployment allows.
"""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(provider="gstn-returns", known_hosts=())
