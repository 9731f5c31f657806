"""A replica's ports for KV caches that move between replicas (prefill/decode disaggregation).

Three entry points, each applied at the engine's next step boundary (or at once when it is
idle), so that the step loop and its fast-forwarded stretches give the same results: every
call cuts the stretch in flight, as a submission does.

- Hand-off (sender): a request tagged `req.extra["pd"]` leaves this replica when its prompt is
  computed (after emitting the first token if the tag is "prefill"). Its blocks stay held under
  a transfer key until `release(key)`, when the receiver has them.
- Reservation (receiver): `expect(req, num_tokens)` queues a request whose KV will come; at a
  step boundary, first come first served, its blocks are reserved if they are free and a
  sequence slot (`max_num_seqs`) is left counting reservations, and `on_reserved` is called
  so the sender may start (vLLM's NixlConnector: the decode side allocates, then pulls).
- Arrival (receiver): `arrive(req)` puts the request, its KV computed, into the running batch.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Callable

from servesim.replica.kv_cache import cdiv
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from servesim.replica.engine import Engine

Prefilled = Callable[[Request, float, object, float], None]  # (request, now_s, transfer key, step_s)
Reserved = Callable[[Request, float], None]


class KVPorts:
    """Hand-offs, reservations and arrivals of one engine (see the module docstring)."""

    def __init__(self, engine: "Engine", on_prefilled: Prefilled, on_reserved: Reserved) -> None:
        self.engine = engine
        self.on_prefilled = on_prefilled
        self.on_reserved = on_reserved
        self._expected: deque[tuple[Request, int]] = deque()  # waiting for a reservation
        self._releases: list[object] = []  # transfer keys to free at the next boundary
        self.held: set[object] = set()  # transfer keys holding blocks here (sender)
        self.reserved: dict[int, Request] = {}  # reserved, KV not arrived yet (receiver)
        self._calls: list[Callable[[float], None]] = []  # run at the next boundary (migration)

    # ------------------------------------------------------------------ engine side
    def allows_stretch(self, prefills) -> bool:
        """A stretch must not run while reservations wait (each step boundary may grant one)
        nor over a prompt that is handed off when it completes."""
        return not self._expected and not any(r.extra.get("pd") for r, _ in prefills)

    def hand_off(self, reqs: list[Request], now_s: float, step_s: float) -> None:
        """These requests' prompts completed in the step that just ended (`step_s` long)."""
        eng = self.engine
        for req in reqs:
            key = ("kv-out", req.id)
            eng.kv.detach(req.id, key)  # the blocks stay until the receiver has them
            eng.scheduler.remove(req, now_s)
            self.held.add(key)
            del req.extra["pd"]
            self.on_prefilled(req, now_s, key, step_s)

    def at_boundary(self, now_s: float) -> None:
        """Apply releases, then grant reservations in order while they fit."""
        eng = self.engine
        kv = eng.kv
        for key in self._releases:
            kv.free(key)
            self.held.discard(key)
        self._releases.clear()
        if self._calls:
            calls, self._calls = self._calls, []
            for fn in calls:
                fn(now_s)
        max_seqs = eng.config.max_num_seqs
        while self._expected:
            req, num_tokens = self._expected[0]
            if eng.scheduler.num_running + len(self.reserved) >= max_seqs or not self._reserve(req, num_tokens):
                break
            self._expected.popleft()
            self.reserved[req.id] = req
            self.on_reserved(req, now_s)

    @property
    def holds_blocks(self) -> bool:
        """Blocks are held by transfers or reserved for a request whose KV is on its way
        (waiting requests may be blocked only until they end)."""
        return bool(self.held or self._expected or self.reserved)

    # ------------------------------------------------------------------ cluster side
    def release(self, key: object, now_s: float) -> None:
        """The receiver has the KV sent under `key`: free it here at the next boundary."""
        self._releases.append(key)
        self.engine.interrupt(now_s)

    def expect(self, req: Request, num_tokens: int, now_s: float) -> None:
        """`req`'s KV for `num_tokens` tokens will come here: reserve blocks when possible."""
        self._expected.append((req, num_tokens))
        self.engine.interrupt(now_s)

    def set_aside(self) -> tuple[list, list]:
        """Take the calls and releases made since the last boundary, for a later one
        (`put_back`): a boundary run again before them (`Engine.settle_before`) must not see them."""
        held = self._calls, self._releases
        self._calls, self._releases = [], []
        return held

    def put_back(self, held: tuple[list, list]) -> None:
        calls, releases = held
        self._calls[:0], self._releases[:0] = calls, releases

    def call(self, fn: Callable[[float], None], now_s: float) -> None:
        """Run `fn(t)` at the next step boundary, where every request's state is exact (a
        migration picks, checks or removes its request there)."""
        self._calls.append(fn)
        self.engine.interrupt(now_s)

    def reserve_now(self, req: Request, num_tokens: int) -> bool:
        """At a boundary: reserve blocks for `num_tokens` of `req` if free (False if not)."""
        if not self._reserve(req, num_tokens):
            return False
        self.reserved[req.id] = req
        return True

    def _reserve(self, req: Request, num_tokens: int) -> bool:
        """`KVCacheManager.reserve` within the room the policy leaves a transfer."""
        kv, room = self.engine.kv, self.engine.scheduler.transfer_room()
        return cdiv(num_tokens, kv.block_size) <= room and kv.reserve(req.id, num_tokens)

    def grow(self, req: Request, num_blocks: int) -> bool:
        """At a boundary: `num_blocks` more blocks for `req`'s reservation, within the room the
        policy leaves (False, changing nothing, if they do not fit)."""
        if num_blocks > self.engine.scheduler.transfer_room():
            return False
        self.engine.kv.allocate_plain_many([(req, num_blocks)])
        return True

    def cancel(self, req: Request) -> None:
        """At a boundary: give back the blocks reserved for `req` (its migration was aborted)."""
        if self.reserved.pop(req.id, None) is not None:
            self.engine.kv.free(req.id)

    def arrive(self, req: Request, now_s: float) -> None:
        """`req`'s KV is here (in its reserved blocks): it joins the running batch."""
        del self.reserved[req.id]
        eng = self.engine
        eng.settles_for(req, now_s)  # (before it joins the batch: the boundary a settle runs again preceded it)
        req.state = RequestState.RUNNING
        eng.scheduler.add_transferred(req, now_s)
        eng.interrupt(now_s)

    def forget(self, req: Request, now_s: float) -> None:
        """`req`'s KV will not come (its sender crashed): at the next boundary, drop it from
        the queue for a reservation, or give back the blocks reserved for it."""
        def drop(_t: float) -> None:
            self._expected = deque(e for e in self._expected if e[0] is not req)
            self.cancel(req)
        self.call(drop, now_s)

    def reset(self) -> list[Request]:
        """The replica crashes: pending calls are void; free every held or reserved block and
        return the requests that were waiting for or holding a reservation here."""
        self._calls.clear()
        return self.drain()

    def drain(self) -> list[Request]:
        """End of run: free every held or reserved block; return the requests waiting for a
        reservation or in transfer to this replica (for the caller to drop)."""
        kv = self.engine.kv
        for key in self.held | set(self._releases):
            kv.free(key)
        self.held.clear()
        self._releases.clear()
        out = [req for req, _ in self._expected] + list(self.reserved.values())
        for req in self.reserved.values():
            kv.free(req.id)
        self._expected.clear()
        self.reserved.clear()
        return out
