"""One replica: the step loop of a vLLM-style engine in virtual time.

Each step: the scheduler picks the batch (allocating KV blocks, maybe preempting), the
performance model prices it, and at the step's end the engine advances the requests, emits
tokens and finishes requests. When the batch is decode-only and the scheduler says the next
steps would repeat it (`is_steady`), the engine prices many steps at once with numpy and
handles them as one event, stopping before anything could change the decision: the first
finish, the next arrival or timer, or the step that would run out of KV blocks. The result is
identical to stepping one by one (tested).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from servesim.core.loop import PRIO_STEP_END, PRIO_STEP_START, EventLoop
from servesim.metrics.recorder import Recorder
from servesim.replica.config import EngineConfig
from servesim.replica.kv_cache import KVCacheManager, cdiv
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput
from servesim.workload.request import Request, RequestState

DoneCallback = Callable[[Request, float], None]


class Engine:
    """A model replica serving requests with one scheduler, KV cache and cost model."""

    def __init__(self, config: EngineConfig, scheduler: Scheduler, kv: KVCacheManager, perf, loop: EventLoop,
                 recorder: Recorder, on_done: DoneCallback, horizon_s: Callable[[], float] = lambda: float("inf")) -> None:
        self.config = config
        self.scheduler = scheduler
        self.kv = kv
        self.perf = perf
        self.loop = loop
        self.recorder = recorder
        self.on_done = on_done
        self.horizon_s = horizon_s  # time of the next event that could change this replica's queues
        self.busy = False
        self.num_steps = 0
        self.num_fast_forwarded_steps = 0

    # ------------------------------------------------------------------ arrivals
    def add_request(self, req: Request, now_s: float) -> None:
        self.recorder.add_request(req)
        reason = self._reject_reason(req)
        if reason:
            req.state = RequestState.REJECTED
            req.finish_s = now_s
            req.extra["reject_reason"] = reason
            self.on_done(req, now_s)
            return
        if req.hash_ids and self.kv.enable_prefix_caching:
            req.kv_block_keys = _block_keys(req, self.kv.block_size)
        self.scheduler.add_request(req, now_s)
        if not self.busy:  # start after every arrival of this instant is queued, as a batch
            self.busy = True
            self.loop.schedule(now_s, lambda t, _: self._start_step(t), None, PRIO_STEP_START)

    def _reject_reason(self, req: Request) -> str | None:
        total = req.prompt_len + req.output_len
        if req.prompt_len < 1 or req.output_len < 1:
            return "empty prompt or output"
        if total > self.config.max_model_len:
            return f"prompt + output = {total} tokens > max_model_len {self.config.max_model_len}"
        if not self.config.enable_chunked_prefill and req.prompt_len > self.config.max_num_batched_tokens:
            return f"prompt of {req.prompt_len} tokens > max_num_batched_tokens without chunked prefill"
        if cdiv(total, self.kv.block_size) > self.kv.num_gpu_blocks:
            return f"needs more KV blocks than the GPU has ({self.kv.num_gpu_blocks})"
        return None

    # ------------------------------------------------------------------ steps
    def _start_step(self, now_s: float) -> None:
        out = self.scheduler.schedule(now_s)
        scheduled = out.scheduled
        if not scheduled:
            self.busy = False
            if self.scheduler.num_waiting and not self.scheduler.num_running:
                raise RuntimeError("scheduler is stuck: requests wait but nothing can run")
            return
        self.busy = True
        # A decode: one token scheduled and only the last generated token left to compute.
        decodes = [r for r, n in scheduled
                   if n == 1 and r.num_output_tokens and r.prompt_len + r.num_output_tokens - r.num_computed_tokens == 1]
        decode_ctxs = [r.num_computed_tokens for r in decodes]
        prefills = []
        if len(decodes) < len(scheduled):
            decoding = set(map(id, decodes))
            prefills = [(r, n) for r, n in scheduled if id(r) not in decoding]
            for r, _ in prefills:
                if r.first_scheduled_s is None:
                    r.first_scheduled_s = now_s
        elif self.config.fast_forward and self.scheduler.is_steady(out):
            if self._fast_forward(now_s, out, decodes, decode_ctxs):
                return
        dt = self.perf.step_time_s([(n, r.num_computed_tokens) for r, n in prefills], decode_ctxs)
        payload = (now_s, out, decodes, prefills, self.scheduler.num_running, self.scheduler.num_waiting)
        self.loop.schedule(now_s + dt, self._end_step, payload, PRIO_STEP_END)

    def _end_step(self, now_s: float, payload: tuple) -> None:
        start_s, out, decodes, prefills, num_running, num_waiting = payload
        step = self.recorder.num_steps
        prev = step - 1
        finished = []
        for req in decodes:  # the common case, kept tight
            req.num_computed_tokens += 1
            req.num_output_tokens += 1
            runs = req.token_steps
            if runs[-1] == prev:
                runs[-1] = step
            else:
                runs.append(step)
                runs.append(step)
            if req.num_output_tokens >= req.output_len:
                finished.append(req)
        prefill_tokens = 0
        emitted = len(decodes)
        for req, n in prefills:  # prompt (or recompute) chunks: a token only when caught up
            prefill_tokens += n
            req.num_computed_tokens += n
            if req.num_computed_tokens >= req.num_tokens:
                emitted += 1
                self._emit(req, step, step, now_s)
                if req.num_output_tokens >= req.output_len:
                    finished.append(req)
        self.num_steps += 1
        self.recorder.log_step(start_s, now_s, prefill_tokens, emitted, num_running, num_waiting,
                               self.kv.num_gpu_blocks - self.kv.num_free_blocks)
        self._finish_and_continue(out, finished, now_s)

    def _emit(self, req: Request, first_step: int, last_step: int, time_s: float) -> None:
        """Record tokens emitted at the end of steps first_step..last_step (time of the first)."""
        req.num_output_tokens += last_step - first_step + 1
        runs = req.token_steps
        if runs and runs[-1] == first_step - 1:
            runs[-1] = last_step
        else:
            runs.append(first_step)
            runs.append(last_step)
        if req.first_token_s is None:
            req.first_token_s = time_s

    def _finish_and_continue(self, out: SchedulerOutput, finished: list[Request], now_s: float) -> None:
        for req in finished:
            req.state = RequestState.FINISHED
            req.finish_s = now_s
            self.scheduler.finish(req, now_s)
        self.scheduler.on_step_end(out, now_s)
        for req in finished:
            self.on_done(req, now_s)
        self._start_step(now_s)

    # ------------------------------------------------------------------ fast forward
    def _fast_forward(self, now_s: float, out: SchedulerOutput, reqs: list[Request], decode_ctxs: list[int]) -> bool:
        """Run k >= 2 identical decode steps as one event; False if fewer would be safe.

        Batches are small (tens to hundreds of requests), so per-request arithmetic is plain
        Python and numpy is used only where the work grows with the number of steps.
        """
        k = min([req.output_len - req.num_output_tokens for req in reqs])  # up to the first finish
        if k < 2:
            return False
        times = self.perf.decode_step_times_s(np.array(decode_ctxs, dtype=np.int64), k)
        times[0] += now_s
        ends = np.cumsum(times)  # sequential sums from now_s, exactly like stepping one by one
        # Step j >= 1 starts at ends[j-1]; an arrival or timer at or before that changes it.
        horizon = min(self.horizon_s(), self.scheduler.next_timer_s())
        k = min(k, 1 + int(ends.searchsorted(horizon)))
        if k < 2:
            return False
        # KV: step j allocates room for ctx + j + 1 tokens. first_new: the first step that needs
        # one more block for a request; it needs another every block_size steps after that.
        bs = self.kv.block_size
        first_new = [h * bs - c for h, c in zip(self.kv.num_blocks_list(reqs), decode_ctxs)]
        free = self.kv.num_free_blocks

        def need(steps: int) -> int:
            last = steps - 1
            return sum((last - f) // bs + 1 for f in first_new if f <= last)

        if need(k) > free:
            lo, hi = 1, k  # need(lo) <= free < need(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
            k = lo
        keyed = [(req, c) for req, c in zip(reqs, decode_ctxs) if req.kv_block_keys]
        if k < 2 or any(self.kv.keys_conflict(req, c + k) for req, c in keyed):
            return False
        added = [0] * k  # blocks allocated at each step of the stretch
        new_blocks = []
        for i, f in enumerate(first_new):
            if f < k:
                steps = range(f, k, bs)
                new_blocks.append((reqs[i], len(steps)))
                for j in steps:
                    added[j] += 1
        used = self.kv.num_gpu_blocks - free
        kv_used = [used := used + a for a in added]
        finished = [req for req in reqs if req.output_len - req.num_output_tokens == k]
        payload = (now_s, reqs, keyed, new_blocks, ends[:k], kv_used, out, self.scheduler.num_waiting, finished)
        self.loop.schedule(float(ends[k - 1]), self._end_fast_forward, payload, PRIO_STEP_END)
        return True

    def _end_fast_forward(self, now_s: float, payload) -> None:
        start_s, reqs, keyed, new_blocks, ends, kv_used, out, num_waiting, finished = payload
        k = len(ends)
        first = self.recorder.num_steps
        last, prev = first + k - 1, first - 1
        for req in reqs:  # every request is decoding: it emits one token per step
            req.num_computed_tokens += k
            req.num_output_tokens += k
            runs = req.token_steps
            if runs[-1] == prev:
                runs[-1] = last
            else:
                runs.append(first)
                runs.append(last)
        for req, nb in new_blocks:
            self.kv.allocate_plain(req.id, nb)
        for req, c in keyed:
            self.kv.cache_full_blocks(req, c + k)
        self.num_steps += k
        self.num_fast_forwarded_steps += k
        self.recorder.log_decode_steps(start_s, ends, len(reqs), num_waiting, kv_used)
        self._finish_and_continue(out, finished, now_s)

    # ------------------------------------------------------------------ end of run
    def drain(self, now_s: float) -> None:
        """Mark every request still held as dropped (the run stopped before they finished)."""
        for req in self.scheduler.unfinished():
            self.kv.free(req.id)
            self.kv.free_cpu(req.id)
            req.state = RequestState.DROPPED
            req.finish_s = now_s
        self.scheduler.running.clear()
        while self.scheduler.waiting:
            self.scheduler.waiting.pop()


def _block_keys(req: Request, block_size: int) -> tuple:
    """Prefix keys at the engine's block size from the request's chained hash ids.

    hash_ids[m] identifies tokens [0, (m+1)*H); a KV block ending at token e lies in hash block
    m = (e-1)//H, and (hash_ids[m], e) identifies tokens [0, e) for any block size.
    """
    H = req.hash_block_tokens
    covered = len(req.hash_ids) * H
    return tuple((req.hash_ids[(e - 1) // H], e) for e in range(block_size, covered + 1, block_size))
