# The Faust worker: no torch, no GPU. Built by docker-compose.yml (context: the repository root).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream stream
COPY recstream recstream
COPY trainer trainer
RUN pip install . \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/recstream --create-home recstream

# RocksDB table state: one anonymous volume per container (so `--scale worker=N` gives each replica its own);
# losing it costs a rebuild from the changelog topics, nothing more
ENV RECSTREAM_DATA_DIR=/var/lib/recstream \
    RECSTREAM_WEB_HOST=0.0.0.0 \
    RECSTREAM_WEB_PORT=6066 \
    RECSTREAM_CACHE_DIR=/tmp/recstream-cache
VOLUME /var/lib/recstream
USER recstream

# /health (200 once consuming and the model is ready) and /metrics (Prometheus)
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=30 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health')"]
# Faust commits offsets and flushes its tables on SIGTERM
STOPSIGNAL SIGTERM
CMD ["recstream", "worker"]
