"""The worker's tests use the service tests' worker processes and API clients
(tests/api/conftest.py)."""

from tests.api.conftest import client, make_client, start_worker, store

__all__ = ["client", "make_client", "start_worker", "store"]
