# syntax=docker/dockerfile:1.7
# Two images from one lock:
#   docker build --target operator -t svoe-operator .   # kopf operator (`svoe operator`)
#   docker build --target feedpod  -t svoe-feedpod  .   # feed pod: `svoe collector`, `svoe aggregator`
#                                                       # and `redis-server` (docs/contracts.md)
# Dependencies come from uv.lock exactly as `make setup` installs them (`uv sync --frozen`), minus the
# dev group; tests/ship runs these two `uv sync` steps for real. Compilers exist only in the builder
# stage; the runtime stages receive the finished virtualenv.

FROM python:3.13-slim-bookworm AS builder
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.13 \
    UV_PROJECT_ENVIRONMENT=/opt/svoe/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# build-essential: wheels without a binary for this platform, and Cython kernels of svoe itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN pip install uv==0.13.9
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY svoe ./svoe
# --no-editable: the project is installed into the venv, so the runtime stages need no /src.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# Common runtime: no compilers, no uv, no sources; a non-root user owning nothing but its home.
FROM python:3.13-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 svoe \
    && useradd --system --uid 10001 --gid svoe --home-dir /home/svoe --create-home --shell /usr/sbin/nologin svoe
COPY --from=builder /opt/svoe/venv /opt/svoe/venv
ENV PATH=/opt/svoe/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache
WORKDIR /home/svoe

FROM runtime AS operator
USER 10001:10001
EXPOSE 8080 8090
# Kubernetes uses the chart's probes; this serves `docker run`. kopf's --liveness endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["svoe"]
CMD ["operator", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]

FROM runtime AS feedpod
# The Redis sidecar can run from this same image (chart value redisImage): `redis-server
# /etc/svoe/redis.conf`, probed with redis-cli, and its preStop waits for the aggregator with wget.
# One registry, one version of everything. Debian's packages, no build step.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools wget \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
# Ports and paths: svoe/api/contract.py (tests/ship/test_dockerfile.py holds this stage to it).
EXPOSE 8080 8081 5555
# The collector's /healthz (the aggregator's is on 8081; the redis container has its own probe).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["svoe"]
CMD ["collector", "--manifest", "/etc/svoe/datafeed.yaml", "--redis", "unix:///var/run/svoe/redis.sock", \
     "--health-host", "0.0.0.0", "--health-port", "8080", "--log-file", "/tmp/feedhandler.log"]
