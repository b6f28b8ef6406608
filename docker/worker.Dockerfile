# syntax=docker/dockerfile:1
# The RQ worker (`python -m worker`) that runs SPP and training jobs with torch, on a GPU when
# it has one.
# TORCH_INDEX_URL picks the torch build: the CUDA 12.8 wheels by default (any recent NVIDIA
# driver; the CUDA runtime ships inside the wheels, so the slim base needs no CUDA image), or
# https://download.pytorch.org/whl/cpu for the CPU-only variant (docker-compose.cpu.yml).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# A home folder: torch keeps its kernel caches under ~/.cache.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/nfsp nfsp

WORKDIR /srv

# torch alone first: the largest layer, and the one that changes least. Same pin as pyproject.toml.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

COPY docker/requirements-worker.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The example model plugins (their entry points need an install; writes to the bound source
# are thrown away). A plugin of your own is one more `pip install` here ("Your own network").
RUN --mount=type=bind,source=examples/plugins,target=/tmp/plugins,rw \
    pip install --no-deps /tmp/plugins

COPY nfcore/ nfcore/
COPY contract/ contract/
COPY worker/ worker/
COPY docker/worker_healthcheck.py /srv/worker_healthcheck.py

# Numeric, so a runtime can tell it is not root without reading /etc/passwd (runAsNonRoot).
USER 10001:10001
CMD ["python", "-m", "worker"]
