"""The fault suite: faults injected on purpose into real services (the session's Ray
instance, embedded PostgreSQL, Tansu), counts compared exactly. Fixtures come from
tests/fixtures.py; every test restores what it broke before it returns."""
