"""The tokens SGLang's PrefillAdder reserves for the running batch (`new_token_ratio` x each
running request's `min(max_new - generated, 4096)`, taken off `rem_total_tokens`) and the decay
of `new_token_ratio` over decode steps. A mixin of `SGLangScheduler` (`sglang.py`), which sets the
state (`new_token_ratio`, `min_ratio`, `_decay`, `_ratios`, `_unclipped`, `_reserve_ratio`,
`_reserves`) and asks for the reserve at every admission; separate because both are exact
shortcuts of per-step arithmetic (a sum over the batch, a subtraction per step) with their own
memo.
"""

from __future__ import annotations

from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS, reserved_tokens
from servesim.sums import left_sum
from servesim.workload.request import Request


class SGLangReserve:
    """`SGLangScheduler`'s reserve and ratio decay (state set by `SGLangScheduler.__init__`)."""

    def _note_reserve(self, req: Request) -> None:
        # A request reserves min(max_new - generated, CLIP) x ratio. It never generates more
        # than its output length (which the simulator knows; the policy's decisions do not
        # read it), so with max_new - output length >= CLIP its reserve is CLIP x ratio at
        # every step it runs (the usual case: no max_tokens and a long max_model_len).
        if self.max_new(req) - req.output_len < CLIP_MAX_NEW_TOKENS:
            self._unclipped.add(req.id)

    def _reserve(self) -> float | int:
        """`reserved_tokens` of the running batch. While every running request's reserve is
        clipped it is the same sum of equal products, in the same order, without a pass
        over the batch (under overload about 300 requests, every step)."""
        if self._unclipped:
            return reserved_tokens(self.running, self.new_token_ratio, self.config.max_model_len)
        # Kept per batch size for the current ratio: asked at every prompt step and every
        # arrival that joins a stretch, where the ratio rarely moved (at its floor it never
        # does) and the batch's size repeats (azure-conv, 1 replica: 104 distinct pairs of
        # 3,811 asks). The same sum, so the same float, as computing it each time.
        ratio, n = self.new_token_ratio, len(self.running)
        if ratio != self._reserve_ratio:
            self._reserve_ratio, self._reserves = ratio, {}
        total = self._reserves.get(n)
        if total is None:
            total = self._reserves[n] = left_sum([CLIP_MAX_NEW_TOKENS * ratio] * n)
        return total

    def _ratio_after(self, steps: int) -> float:
        """`new_token_ratio` after `steps` more decode steps: one subtraction of the decay per
        step down to the floor, as stepping makes it (`ratio - decay x steps` at once can differ
        in the last bits, and admission compares against it)."""
        ratios = self._ratios
        if ratios[0] != self.new_token_ratio:  # (set since: by a decay or a retraction)
            ratios = self._ratios = [self.new_token_ratio]
        floor, decay = self.min_ratio, self._decay
        while len(ratios) <= steps:
            r = ratios[-1]
            if r == floor:
                return floor
            ratios.append(max(r - decay, floor))
        return ratios[steps]
