"""Where ``super-accountant`` may send a college's credentials in production.

The consolidating accountant's portal is run by the college group itself (the seed's Super
Accountant portal), not a public provider with a fixed host: its host is declared by the operator in
``LEDGERFLOW_SUPER_ACCOUNTANT_HOSTS`` (comma separated host names, https only); with none declared,
production requests are refused by the URL policy and only sandboxes are reachable.
"""

from __future__ import annotations

import os

from engine.security.egress import EndpointPolicy

HOSTS_ENV = "LEDGERFLOW_SUPER_ACCOUNTANT_HOSTS"

ENDPOINTS = EndpointPolicy(
    provider="super-accountant",
    known_hosts=tuple(h.strip() for h in os.environ.get(HOSTS_ENV, "").split(",") if h.strip()),
)
