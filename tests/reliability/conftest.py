"""Fixtures of the reliability suite (helpers live in reliability_helpers.py: a unique module name,
since several test folders have a conftest)."""
from reliability_helpers import ws  # noqa: F401 - the fixture
