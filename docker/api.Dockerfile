# syntax=docker/dockerfile:1
# The REST API (`python -m api`). Torch-free: it validates configs and enqueues jobs by dotted
# path, so only api/ and nfcore/ (whose config, cost, catalog and presets modules never import
# torch) are copied, with the packages of docker/requirements-api.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent nfsp

WORKDIR /srv

# Dependencies first, in a layer that a source change does not invalidate.
COPY docker/requirements-api.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY nfcore/ nfcore/
COPY contract/ contract/
COPY api/ api/

# Numeric, so a runtime can tell it is not root without reading /etc/passwd (runAsNonRoot).
USER 10001:10001
# Inside the container the API always listens on 0.0.0.0:8000; docker-compose.yml publishes it.
ENV API_HOST=0.0.0.0 \
    API_PORT=8000
EXPOSE 8000
CMD ["python", "-m", "api"]
