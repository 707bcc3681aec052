"""Where the ``sendgrid`` connector may send a tenant's API key in production: SendGrid's v3 API,
global or the EU data-residency host (SendGrid docs, "Mail Send" and "EU data residency")."""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(
    provider="sendgrid", provider_urls=("https://api.sendgrid.com", "https://api.eu.sendgrid.com")
)
