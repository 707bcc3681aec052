"""Where the ``gstin-lookup`` connector may send a tenant's GSP credentials in production.

Empty on purpose: the taxpayer search is reached through a GSP (the GST network does not serve it
to taxpayers directly), and no GSP's production host has been confirmed for this API yet
(india-gst.md section 1: "paths partly unconfirmed"). A host is added here, with its source, when a
tenant's GSP is signed up. Until then only ``environment: sandbox`` works, which only a development
deployment allows.
"""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(provider="gstin-lookup", known_hosts=())
