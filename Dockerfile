# One image for every Ledgerflow process (api, relay, stream workers, projector); docker-compose.yml
# picks the role with the command. The broker and the database are separate images.
#
# Two stages: the native Avro reader (schemas/_native_reader.pyx, built by setup.py) needs a C compiler,
# which the running image does not: the first stage builds the wheel, the second installs it.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the package needs: copying the whole checkout would pull in .venv/ and var/ (the local
# stack's Kafka jars and data).
COPY pyproject.toml README.md setup.py ./
COPY engine ./engine
COPY streams ./streams
COPY projections ./projections
COPY schemas ./schemas
COPY connectors ./connectors
# Operator tooling (ops/: topics ensure, the lag table and health check).
COPY ops ./ops
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

# Nothing in the services needs root.
RUN useradd --system --uid 10001 --home-dir /app ledgerflow
USER ledgerflow

ENTRYPOINT ["ledgerflow"]
CMD ["api"]
