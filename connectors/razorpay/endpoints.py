"""Where the ``razorpay`` connector may send a tenant's key pair in production: Razorpay's API host
(https://api.razorpay.com/v1, razorpay-python's base URL)."""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(provider="razorpay", known_hosts=("api.razorpay.com",))
