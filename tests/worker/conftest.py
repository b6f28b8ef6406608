"""The worker's tests use the service tests' worker processes (tests/api/conftest.py)."""

from tests.api.conftest import start_worker

__all__ = ["start_worker"]
