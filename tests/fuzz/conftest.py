"""The fuzz suite's world: one embedded runtime behind `meterline serve`'s app, renewed every
few hundred examples so that the warehouse each check reads stays small.

The budget: `make test` runs each property with a few hundred cases; `make fuzz` sets
METERLINE_FUZZ_EXAMPLES=10000 (read in test_fuzz_api.py, so other hypothesis tests keep their own
settings).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterline.local.app import create_app
from tests.fuzz.wire import CALLS, COUNTED, quiet_worker_log
from tests.support import embedded_runtime, new_key

RENEW_EVERY = 300  # examples per runtime


class World:
    """The app, a valid key, and a source of ids no other example has used."""

    def __init__(self, base: Path):
        self._base = base
        self._runtimes = itertools.count()
        self._ids = itertools.count(1)
        self._examples = 0
        self.runtime = None
        self._renew()

    def _renew(self) -> None:
        if self.runtime is not None:
            self.runtime.adapters.warehouse.close()
        self.runtime = embedded_runtime(self._base / f"rt{next(self._runtimes)}")
        admin = self.runtime.admin.service
        admin.create_billable_metric({"code": COUNTED, "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value"})
        admin.create_billable_metric({"code": CALLS, "name": "Calls", "aggregation_type": "count_agg"})
        self.client = create_app(self.runtime).test_client()
        self.key = new_key(self.runtime)

    def start_example(self) -> None:
        self._examples += 1
        # A message still queued was left by an example that failed: a fresh runtime, so that
        # no failure is reported twice.
        if self._examples % RENEW_EVERY == 0 or self.runtime.queue.depth():
            self._renew()

    def unique(self) -> int:
        return next(self._ids)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    with quiet_worker_log():
        made = World(tmp_path_factory.mktemp("fuzz"))
        yield made
        made.runtime.adapters.warehouse.close()
