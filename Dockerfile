# Interview Scorer: a multi-stage image. The builder resolves the dependencies (their own layer,
# rebuilt only when pyproject.toml changes) and builds the service's wheel into a virtual
# environment; the final image holds that environment and nothing else: no compiler, no pip
# cache, no source tree. Migrations are a separate step (`interview-scorer migrate`, the
# compose file's `migrate` service), never run at start-up: `serve` refuses an out-of-date
# database. The same recipe runs in CI from an installed wheel (.ci/image-recipe).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first: only pyproject.toml decides them, so code changes reuse this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt
# Then the service itself, as a wheel (migrations are packed inside it).
COPY README.md ./
COPY migrations ./migrations
COPY service ./service
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCORER_WORKERS=2 \
    SCORER_DATABASE_URL=sqlite+aiosqlite:////var/lib/interview-scorer/scorer.db \
    SCORER_EMAIL_DIR=/var/lib/interview-scorer/outbox \
    PROMETHEUS_MULTIPROC_DIR=/tmp/interview-scorer-metrics
RUN groupadd --system --gid 10001 scorer \
    && useradd --system --uid 10001 --gid scorer --home-dir /var/lib/interview-scorer \
        --no-create-home --shell /usr/sbin/nologin scorer \
    && mkdir -p /var/lib/interview-scorer \
    && chown scorer:scorer /var/lib/interview-scorer
COPY --from=builder /opt/venv /opt/venv
WORKDIR /var/lib/interview-scorer
USER 10001:10001
EXPOSE 8000
# slim has no curl: the health check asks /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# The API processes (SCORER_WORKERS of them) and, beside them, one background worker that sends
# the mail, delivers webhooks and scores asynchronous evaluations; serve restarts it if it dies.
# To run workers as containers of their own (deploy/docker-compose.yml does): the API with
# `interview-scorer serve --no-worker ...`, the workers with `interview-scorer worker`, whose
# health check is `interview-scorer worker --check` with SCORER_WORKER_HEARTBEAT_FILE set.
CMD ["interview-scorer", "serve", "--host", "0.0.0.0", "--port", "8000"]
