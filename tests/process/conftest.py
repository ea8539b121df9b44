"""Fixtures of the process tests that any of them may ask for by name."""

from tests.process.harness import control_env, env  # noqa: F401 (fixtures)
