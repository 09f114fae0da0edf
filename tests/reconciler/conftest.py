"""The reconciler tests' shared fixtures: ``postgres``, one private PostgreSQL cluster for the whole
session (tests/support/postgres.py), used by the store suite and the failover tests."""

from tests.support.postgres import postgres  # noqa: F401  (a session-scoped fixture)
