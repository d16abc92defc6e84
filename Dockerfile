# serve-ml image: CPU-only, runs as a non-root user.
#   docker build -t serve-ml:0.1.0 .
#   docker run -p 8000:8000 serve-ml:0.1.0          # the demo fleet on the embedded defaults
# compose.yaml runs it beside PostgreSQL/TimescaleDB, Kafka, Mosquitto, Prometheus and Grafana.

# --- build: a virtualenv with serve-ml and its dependencies ------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/serve-ml
ENV PATH=/opt/serve-ml/bin:$PATH
WORKDIR /src
# The same steps as `make install` (tests/unit/test_packaging.py compares them), without
# the test extras and not editable. torch first, on its own, pinned to the CPU wheel:
# a bare `torch` requirement would pull a multi-GB CUDA build.
RUN python -m pip install --quiet --upgrade pip
RUN python -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY serve_ml ./serve_ml
RUN python -m pip install --quiet .

# --- runtime: the virtualenv only, a user without privileges ------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 serve-ml \
 && useradd --system --uid 10001 --gid serve-ml --home-dir /var/lib/serve-ml --create-home serve-ml
COPY --from=build /opt/serve-ml /opt/serve-ml
ENV PATH=/opt/serve-ml/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVE_ML_STATE_DIR=/var/lib/serve-ml \
    SERVE_ML_HTTP_HOST=0.0.0.0 \
    SERVE_ML_RAY_LOOPBACK=false
USER serve-ml
WORKDIR /var/lib/serve-ml
EXPOSE 8000 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/serve-ml/health/live', timeout=4)"
CMD ["serve-ml", "up"]
