"""The REST service: FastAPI in front of an RQ queue on Redis. Never imports torch."""
