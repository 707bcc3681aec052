"""Where the ``veekaart`` connector may send a tenant's API key in production: the shop's API host."""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(provider="veekaart", known_hosts=("api.veekaart.com",))
