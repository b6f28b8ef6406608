# syntax=docker/dockerfile:1
# The Streamlit dashboard (`streamlit run app/main.py`). Torch-free: it talks to the API over
# HTTP, so only app/ and nfcore/ (config, result, plots) are copied, with the packages of
# docker/requirements-app.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv

# A home folder: Streamlit and kaleido's headless browser write small caches under it.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/nfsp nfsp

WORKDIR /srv

# Dependencies first, in a layer that a source change does not invalidate.
COPY docker/requirements-app.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY nfcore/ nfcore/
COPY app/ app/

# Numeric, so a runtime can tell it is not root without reading /etc/passwd (runAsNonRoot).
USER 10001:10001
ENV STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_CLIENT_TOOLBAR_MODE=minimal
EXPOSE 8501
CMD ["streamlit", "run", "app/main.py"]
