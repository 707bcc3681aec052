"""Where the ``gst-irp`` connector may send a tenant's IRP credentials in production.

Kept deliberately short: a host is listed only when public integrations name it as the production API.

* ``api.einvoice1.gst.gov.in``: NIC's IRP-1 production API host (the e-invoice paths
  ``/eivital/v1.04/auth`` and ``/eicore/v1.03/...`` of india-gst.md section 1 live there).
* ``api.einvoice2.gst.gov.in``: NIC's second IRP (IRP-2), same API.
* ``gsp.adaequare.com``: Adaequare's GSP, the plain-JSON wrapper resilient-tech/india-compliance
  (named in india-gst.md) and several ERP integrations call (paths ``/enriched/ei/api/...``).

Other GSPs are added here, with their source, when a tenant needs one. The sandbox
(``einv-apisandbox.nic.in``, or our own ``connectors/gst_irp/sandbox.py``) is reached with
environment ``sandbox``, which only a development deployment allows.
"""

from __future__ import annotations

from engine.security.egress import EndpointPolicy

ENDPOINTS = EndpointPolicy(
    provider="gst-irp",
    known_hosts=("api.einvoice1.gst.gov.in", "api.einvoice2.gst.gov.in", "gsp.adaequare.com"),
)
