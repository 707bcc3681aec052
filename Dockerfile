# One image for every Ledgerflow process (api, relay, stream workers, projector); docker-compose.yml
# picks the role with the command. The broker and the database are separate images.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs: copying the whole checkout would pull in .venv/ and var/ (the local
# stack's Kafka jars and data).
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY streams ./streams
COPY projections ./projections
COPY schemas ./schemas
COPY connectors ./connectors
# Operator tooling (ops/: topics ensure, the lag table and health check).
COPY ops ./ops
RUN pip install .

# Nothing in the services needs root.
RUN useradd --system --uid 10001 --home-dir /app ledgerflow
USER ledgerflow

ENTRYPOINT ["ledgerflow"]
CMD ["api"]
