"""Which engines' next turns may join keyed stretches (`replica/keyed_join.py`): decided once a
run, where nothing reads the replicas' prefix caches from outside (`simulation._key_flags`).

The join admits the turn as vLLM's own admission would, so the policy's `schedule` must be
vLLM's, or one whose admission of a lone waiting request is, method for method: a subclass
that overrides one of them is left to end the stretch, as before keyed joins existed.
"""

from __future__ import annotations

from servesim.replica.schedulers.andes import AndesScheduler
from servesim.replica.schedulers.autellix import AutellixScheduler
from servesim.replica.schedulers.base import Scheduler
from servesim.replica.schedulers.batchllm import BatchLLMScheduler
from servesim.replica.schedulers.continuum import ContinuumScheduler
from servesim.replica.schedulers.fastswitch import FastSwitchScheduler
from servesim.replica.schedulers.hygen import HyGenScheduler
from servesim.replica.schedulers.priority import KeyedScheduler
from servesim.replica.schedulers.trtllm import TRTLLMScheduler
from servesim.replica.schedulers.vllm import VLLMScheduler
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.replica.schedulers.vllm_v0 import VLLMV0Scheduler


def admits_keyed(engine) -> bool:
    """Can requests with prefix keys join this engine's stretches (where nothing reads its
    prefix cache from outside)? The vLLM cache's prefix caching (keyed stretches through
    finishes) and vLLM's own admission; fixed for a run, so `keyed_join` need not ask (but for
    what `joins_last` reads at each join)."""
    # (a policy that reorders its batch from step to step too: its keyed stretches end before a
    # step two requests leave together, closed loop or open, `policy_stops.limit`, and a join
    # there is refused, `departs_together`)
    return engine.keyed_through and engine.kv.enable_prefix_caching and _vllm_admission(engine.scheduler)


def _vllm_admission(sched) -> bool:
    """Is the next `schedule`'s admission of a lone waiting request vLLM's own (`admit` with
    the prefix hits, `first_chunk`), with no adapters: `VLLMScheduler` (its queue in order), or
    a `KeyedScheduler` admitting joins (`admits_joins`: no per-step state a join skips, its
    `_admit` calling `admit` for the head, `join` as vLLM's), `hygen` (`_admit_online`), `andes`,
    `fastswitch` (their walks' `admit`, where `joins_last` says the turn is admitted last) or
    `continuum` (a lone call whose job holds no pin), `batchllm` (its projection within the
    threshold) or `trtllm` (GUARANTEED_NO_EVICT's room takes the turn's reservation: `joins_last`)?"""
    cls = type(sched)
    if isinstance(sched, FastSwitchScheduler):  # (one tenant held: its walk in arrival order, `joins_last`)
        return (cls.schedule is FastSwitchScheduler.schedule and cls.admit is VLLMSteps.admit
                and cls.first_chunk is VLLMSteps.first_chunk and cls.start is VLLMSteps.start
                and cls.before_join is FastSwitchScheduler.before_join and cls.joins_last is FastSwitchScheduler.joins_last
                and cls.join_blocks is VLLMSteps.join_blocks)
    if isinstance(sched, ContinuumScheduler):  # (a lone waiting call whose job holds no pin: `joins_last`)
        return (cls.schedule is ContinuumScheduler.schedule and cls.arrivals_join is VLLMScheduler.arrivals_join
                and cls.before_join is VLLMScheduler.before_join and cls.joins_last is ContinuumScheduler.joins_last
                and cls.admit is VLLMSteps.admit and cls.first_chunk is VLLMSteps.first_chunk
                and cls._admit is VLLMScheduler._admit and sched.lora is None)
    if isinstance(sched, AndesScheduler):  # (a lone pending turn under the knapsack's threshold: `joins_last`)
        return (cls.schedule is AndesScheduler.schedule and cls.decide is AndesScheduler.decide
                and cls._bring_in is AndesScheduler._bring_in and cls.admit is VLLMSteps.admit
                and cls.first_chunk is VLLMSteps.first_chunk and cls.start is AndesScheduler.start
                and cls.before_join is AndesScheduler.before_join and cls.joins_last is AndesScheduler.joins_last
                and cls.join_blocks is AndesScheduler.join_blocks)
    if isinstance(sched, VLLMV0Scheduler):  # (prefill-first: the turn's prompt runs alone, `stalls_decodes`)
        return (cls.schedule is VLLMV0Scheduler.schedule and cls._schedule_prefills is VLLMV0Scheduler._schedule_prefills
                and cls.start is VLLMV0Scheduler.start and cls.before_join is VLLMV0Scheduler.before_join
                and cls.joins_last is VLLMV0Scheduler.joins_last and cls.join_blocks is VLLMV0Scheduler.join_blocks
                and cls.keyed_joined is VLLMV0Scheduler.keyed_joined)
    if isinstance(sched, BatchLLMScheduler):  # (its admission loop for the lone turn, the projection bounded: `joins_last`)
        return (cls.schedule is BatchLLMScheduler.schedule and cls.begin_step is BatchLLMScheduler.begin_step
                and cls._projected_use is BatchLLMScheduler._projected_use and cls.first_chunk is BatchLLMScheduler.first_chunk
                and cls.start is KeyedScheduler.start and cls.before_join is KeyedScheduler.before_join
                and cls.joins_last is BatchLLMScheduler.joins_last and cls.keyed_joined is BatchLLMScheduler.keyed_joined
                and cls.join_blocks is VLLMSteps.join_blocks and cls.max_join_chunks == 0)
    if isinstance(sched, TRTLLMScheduler):  # (GUARANTEED_NO_EVICT, its context whole: `joins_last`)
        return (cls.schedule is TRTLLMScheduler.schedule and cls._no_evict is TRTLLMScheduler._no_evict
                and cls._micro_batch is TRTLLMScheduler._micro_batch and cls._run_context is TRTLLMScheduler._run_context
                and cls.first_chunk is TRTLLMScheduler.first_chunk and cls.start is Scheduler.start
                and cls.before_join is TRTLLMScheduler.before_join and cls.joins_last is TRTLLMScheduler.joins_last
                and cls.keyed_joined is TRTLLMScheduler.keyed_joined and cls.join_blocks is Scheduler.join_blocks
                and cls.max_join_chunks == 0)
    if not (isinstance(sched, VLLMSteps) and cls.admit is VLLMSteps.admit and cls.first_chunk is VLLMSteps.first_chunk):
        return False
    if isinstance(sched, AutellixScheduler):  # (its accounting at the join step: `joins_last`, `keyed_joined`)
        return (cls.schedule is KeyedScheduler.schedule and cls._admit is KeyedScheduler._admit
                and cls.before_join is KeyedScheduler.before_join and cls.start is AutellixScheduler.start
                and cls.joins_last is AutellixScheduler.joins_last and cls.keyed_joined is AutellixScheduler.keyed_joined
                and cls.max_join_chunks == 1)
    if isinstance(sched, VLLMScheduler):
        return (cls.schedule is VLLMScheduler.schedule and cls.arrivals_join is VLLMScheduler.arrivals_join
                and cls.join is VLLMScheduler.join and cls.before_join is VLLMScheduler.before_join
                and cls.joins_last is VLLMScheduler.joins_last and sched.lora is None)
    if isinstance(sched, HyGenScheduler):  # (online only: `joins_last`)
        return (cls.schedule is HyGenScheduler.schedule and cls._admit_online is HyGenScheduler._admit_online
                and cls._allocate_online is HyGenScheduler._allocate_online and cls._start is HyGenScheduler._start
                and cls.before_join is HyGenScheduler.before_join and cls.joins_last is HyGenScheduler.joins_last)
    return (isinstance(sched, KeyedScheduler) and cls.schedule is KeyedScheduler.schedule
            and cls._admit is KeyedScheduler._admit and cls.arrivals_join is KeyedScheduler.arrivals_join
            and cls.join is KeyedScheduler.join and cls.before_join is KeyedScheduler.before_join
            and cls.joins_last is KeyedScheduler.joins_last and sched.admits_joins())
