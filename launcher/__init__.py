"""The whole stack on one machine (`python -m launcher`, `make run`): Redis, the API, the
workers and the dashboard as supervised child processes; and the local servers the tests and
the benchmarks start (`launcher.localhost`). Not a service: no image holds it."""
