"""ASGI entry point: ``uvicorn engine.api.main:app``.

Each uvicorn worker process imports this module, so logging and telemetry are set up here, once
per process, before the app takes requests.
"""

from engine import logs, telemetry
from engine.api.app import create_app
from engine.config import load_settings

settings = load_settings()
logs.configure()
telemetry.configure("ledgerflow-api", settings)
app = create_app(settings)
