"""Where the ``etims`` connector may send a tenant's device identity and CMC key in production.

* ``etims-api.kra.go.ke``: KRA's production OSCU API (``/etims-api/<endpoint>``), named by KRA's
  eTIMS system-to-system integration page and used by navariltd/kenya-compliance and Odoo's
  ``l10n_ke_edi_oscu`` (kenya-etims.md, "Endpoints").
* ``http://127.0.0.1:8088``: a VSCU signing service (KRA's VSCU JAR) running on the tenant's own
  machine. VSCU is integrator-hosted by design (kenya-etims.md, "OSCU vs VSCU"); the port is the one
  integrators commonly configure and is unconfirmed: another origin is added here when a tenant runs
  the JAR elsewhere. An IP literal, so no DNS answer can turn it into another address.

The KRA sandbox (``etims-api-sbx.kra.go.ke``) and our own ``connectors/etims/sandbox.py`` are reached
with environment ``sandbox``, which only a development deployment allows; sandbox traffic can never
reach these production hosts through a sandbox integration, nor the reverse (engine/security/egress.py).
"""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

PRODUCTION_HOST = "etims-api.kra.go.ke"
SANDBOX_HOST = "etims-api-sbx.kra.go.ke"
PRODUCTION_URL = f"https://{PRODUCTION_HOST}"
SANDBOX_URL = f"https://{SANDBOX_HOST}"
VSCU_LOCAL_ORIGIN = "http://127.0.0.1:8088"

ENDPOINTS = EndpointPolicy(
    provider="etims",
    known_hosts=(PRODUCTION_HOST,),
    local_addresses=(VSCU_LOCAL_ORIGIN,),
)
