"""Hypothesis profiles for the property tests (tests/test_fuzz_*.py).

- "ci" (default): a fixed seed (derandomize) and a small example budget, so `make test` is
  reproducible and takes a few minutes for all fuzz files together.
- "fuzz": chosen by setting CNNEXT_FUZZ_EXAMPLES=N (make fuzz): N examples per test, fresh
  random examples each run (failures are saved in .hypothesis/ and replayed first next time).
"""
import os

from hypothesis import HealthCheck, settings

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("ci", max_examples=1, derandomize=True, database=None, **_common)
settings.register_profile("fuzz", max_examples=1, **_common)

_budget = os.environ.get("CNNEXT_FUZZ_EXAMPLES")
settings.load_profile("fuzz" if _budget else "ci")


def examples(ci_budget):
    """Example budget of one test: its CI budget, or CNNEXT_FUZZ_EXAMPLES in a fuzz run."""
    return int(_budget) if _budget else ci_budget


def fuzz(ci_budget):
    """Decorator: the current profile with this test's example budget."""
    return settings(settings.default, max_examples=examples(ci_budget))
