"""Where the ``bank`` connector may send a tenant's bank API key in production.

Empty on purpose: seed 002 describes a bank API by its shape, not a host, and every bank (and each
corporate API programme) has its own. A bank's production host is added here, with its source, when
a tenant's bank is signed up. Until then only ``environment: sandbox`` works, which only a
development deployment allows (engine/security/egress.py).
"""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(provider="bank", known_hosts=())
