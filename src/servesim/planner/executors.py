"""Where probe simulations run: this process, local worker processes, or a Ray cluster.

An executor maps a picklable function over items and hands each result back as it arrives
(so the caller can cache it at once and a killed search loses nothing finished), then returns
all results in input order. Results never depend on the executor or the number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from typing import Any, Callable, Sequence

from servesim.errors import InputError

OnResult = Callable[[int, Any], None]  # (index in the input, result)
EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Worker processes on this machine (`jobs` = 1: in this process, no pool)."""

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs if jobs is not None else (os.cpu_count() or 1)
        if self.jobs < 1:
            raise InputError(f"--jobs must be >= 1, got {self.jobs}")
        self._pool: cf.ProcessPoolExecutor | None = None

    def map(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        results: list[Any] = [None] * len(items)
        if self.jobs == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                results[i] = fn(item)
                if on_result:
                    on_result(i, results[i])
            return results
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.jobs)
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if on_result:
                on_result(i, results[i])
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Tasks on a Ray cluster (`address` None: start or join a local Ray)."""

    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray; install it with: pip install 'servesim[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._remote: dict[Callable, Any] = {}

    def map(self, fn: Callable, items: Sequence, on_result: OnResult | None = None) -> list:
        ray = self._ray
        remote = self._remote.setdefault(fn, ray.remote(fn))
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            results[i] = ray.get(done[0])
            if on_result:
                on_result(i, results[i])
        return results

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(name: str, jobs: int | None = None, address: str | None = None):
    if name == "local":
        if address is not None:
            raise InputError("--address applies to --executor ray only")
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(address)
    raise InputError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
