"""ASGI entry point: ``uvicorn engine.api.main:app``."""

from engine.api.app import create_app

app = create_app()
