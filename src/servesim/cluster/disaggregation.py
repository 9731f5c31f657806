"""Prefill/decode disaggregation: prompts on prefill replicas, KV over the network, decode elsewhere.

The cluster's router picks among prefill and mixed replicas. A request sent to a prefill
replica is tagged (`req.extra["pd"]`, the side that emits the first token); when its prompt is
computed there, the replica hands it off (`KVPorts`), the decode router picks a decode replica,
which reserves the request's blocks at its next step boundary (first come, first served),
then the KV crosses the sender's link (shared with its other transfers, `network.Link`), and
the request joins the decode replica's running batch with `num_computed_tokens` = prompt. The
sender keeps its blocks until the receiver has them.

Conditional disaggregation chooses the decode replica first; its prefix cache tells how much
of the prompt is uncached, and a short one is prefilled right there (Dynamo, llm-d).
"""

from __future__ import annotations

from dataclasses import dataclass

from servesim.cluster.config import DisaggregationConfig
from servesim.cluster.rejection import Admission
from servesim.cluster.network import Link, NetworkConfig, exposed_bytes, fixed_time_s, kv_transfer_bytes, place_on_nodes
from servesim.cluster.routers import Router
from servesim.replica.kv_cache import cdiv
from servesim.replica.kv_ports import KVPorts
from servesim.workload.request import Request, RequestState


@dataclass(slots=True)
class Transfer:
    """One request's KV moving from a prefill replica to a decode replica (times in seconds)."""

    req: Request
    src: int
    dst: int
    key: object  # the sender's transfer key (its blocks stay held under it)
    prefill_end_s: float
    prefill_step_s: float  # duration of the step that completed the prompt (layer-wise overlap)
    num_bytes: int
    link: str = ""  # "intra" or "inter" (node)
    start_s: float = -1.0  # blocks reserved at the receiver, bytes start to move
    end_s: float = -1.0  # the KV is usable at the receiver
    void: bool = False  # its sender or receiver crashed before the end


class Disaggregator:
    """Routes requests to prefill (or mixed) replicas and moves their KV to decode replicas."""

    def __init__(self, cluster, pools, cfg: DisaggregationConfig, network: NetworkConfig,
                 decode_router: Router) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.network = network
        self.decode_router = decode_router
        by_name = {pool.name: pool for pool in pools}
        self.pool_of: list = [by_name[r.pool] for r in cluster.replicas]  # (an autoscaler's spares too)
        self.roles: list[str] = [pool.role for pool in self.pool_of]
        self.nodes = place_on_nodes([p.tp for p in self.pool_of], [p.gpus_per_node for p in self.pool_of])
        self.links: dict[tuple[int, str], Link] = {}
        self.transfers: list[Transfer] = []
        self._in_flight: dict[int, Transfer] = {}
        self.num_local_prefills = 0  # conditional disaggregation kept these on the decode replica
        self.num_overflow = 0  # Splitwise overflow: served whole by a mixed replica
        cluster.crash_hooks.append(self.on_crash)
        decode = [i for i, r in enumerate(self.roles) if r == "decode"]
        self.admission = Admission(cluster, cfg, decode) if cfg.rejection != "off" else None

    def attach(self) -> None:
        """Give every prefill and decode replica its KV ports (after the replicas exist)."""
        for i, rep in enumerate(self.cluster.replicas):
            if self.roles[i] != "mixed":
                rep.engine.ports = KVPorts(rep.engine, self._prefilled(i), self._reserved(i))

    def router_of(self, index: int) -> Router:
        return self.decode_router if self.roles[index] == "decode" else self.cluster.router

    # ------------------------------------------------------------------ arrivals
    def dispatch(self, req: Request, cands: list[int], now_s: float) -> None:
        """Route an arriving request: decode replica first when conditional, then prefill/mixed."""
        c = self.cluster
        front = [i for i in cands if self.roles[i] != "decode"]
        if self.cfg.conditional != "off":
            d = self._pick_decode(req, [i for i in cands if self.roles[i] == "decode"], now_s)
            if d is None:
                return
            if not self._remote(req, d):
                self.num_local_prefills += 1
                return c.submit(d, req, now_s)
            req.extra["pd_target"] = d
        if self.cfg.overflow == "splitwise":
            front = self._splitwise_front(req, front, cands, now_s)
        if not front:
            return c.end(req, now_s, RequestState.FAILED, "no live prefill replica")
        pick = c.route(c.router, req, front, now_s)
        if pick is None:
            return c.end(req, now_s, RequestState.REJECTED, f"shed by router {c.router.name}")
        if self.roles[pick] == "prefill":
            reason = self.admission.at_arrival(req, pick, now_s) if self.admission is not None else None
            if reason is not None:
                self._forget_target(req, now_s)
                return c.end(req, now_s, RequestState.REJECTED, reason)
            req.extra["pd"] = self.cfg.first_token
        else:
            req.extra.pop("pd_target", None)  # a mixed replica serves it whole
            req.extra.pop("ttft_pred_s", None)
        c.router.on_dispatch(req, pick, now_s)
        c.submit(pick, req, now_s)

    def _splitwise_front(self, req: Request, front: list[int], cands: list[int], now_s: float) -> list[int]:
        """Splitwise's mixed-pool rule (splitwise-sim `MixedPoolScheduler`): the prefill
        replicas that can take the prompt (no pending prompt tokens, or pending + prompt <=
        `prompt_max_pending_batch_tokens`) while some decode replica has KV memory for the
        whole request; else the mixed replicas, which serve it whole. servesim's
        simplification: machines are not moved between pools."""
        c, lim = self.cluster, self.cfg.prompt_max_pending_batch_tokens
        mixed = [i for i in front if self.roles[i] == "mixed"]
        prefill = [i for i in front if self.roles[i] == "prefill"]
        if not mixed:
            return prefill

        def takes_prompt(i: int) -> bool:
            q = c.replicas[i].view(now_s).outstanding_prefill_tokens
            return q == 0 or q + req.prompt_len <= lim

        def has_memory(i: int) -> bool:
            v = c.replicas[i].view(now_s)
            return v.kv_used_blocks + cdiv(req.prompt_len + req.output_len, c.replicas[i].engine.kv.block_size) \
                < v.num_gpu_blocks

        ok = [i for i in prefill if takes_prompt(i)]
        if ok and any(has_memory(i) for i in cands if self.roles[i] == "decode"):
            return ok
        self.num_overflow += 1
        return mixed

    def _forget_target(self, req: Request, now_s: float) -> None:
        """A request rejected after conditional disaggregation chose its decode replica."""
        d = req.extra.pop("pd_target", None)
        if d is not None:
            self.decode_router.on_complete(req, d, now_s)

    def _remote(self, req: Request, d: int) -> bool:
        """Dynamo / llm-d rule on the uncached prompt tokens at decode replica d."""
        uncached = req.prompt_len - self.cluster.replicas[d].engine.kv.num_cached_prefix_tokens(req)
        if self.cfg.conditional == "dynamo":
            return uncached > self.cfg.max_local_prefill_length
        return uncached >= self.cfg.non_cached_tokens

    def _pick_decode(self, req: Request, cands: list[int], now_s: float) -> int | None:
        c = self.cluster
        if not cands:
            c.end(req, now_s, RequestState.FAILED, "no live decode replica")
            return None
        d = c.route(self.decode_router, req, cands, now_s)
        if d is None:
            c.end(req, now_s, RequestState.REJECTED, f"shed by decode router {self.decode_router.name}")
            return None
        kv, cfg = c.replicas[d].engine.kv, c.replicas[d].engine.config
        if cdiv(req.prompt_len + req.output_len, kv.block_size) > kv.num_gpu_blocks:
            c.end(req, now_s, RequestState.REJECTED,
                  f"needs more KV blocks than the decode GPU has ({kv.num_gpu_blocks})")
            return None
        if req.prompt_len + req.output_len > cfg.max_model_len:
            c.end(req, now_s, RequestState.REJECTED, f"prompt + output > decode max_model_len {cfg.max_model_len}")
            return None
        self.decode_router.on_dispatch(req, d, now_s)
        return d

    # ------------------------------------------------------------------ hand-off and transfer
    def _prefilled(self, src: int):
        def on_prefilled(req: Request, now_s: float, key: object, step_s: float) -> None:
            c = self.cluster
            c.replicas[src].num_outstanding -= 1
            c.router.on_complete(req, src, now_s)
            if c.kv_store is not None:
                c.kv_store.put(req, src)  # the prompt's KV exists from now on
            reason = self.admission.at_decode(req, now_s) if self.admission is not None else None
            if reason is not None:  # Mooncake's per-stage baseline: this prefill is wasted
                self._forget_target(req, now_s)
                c.replicas[src].engine.ports.release(key, now_s)
                return c.end(req, now_s, RequestState.REJECTED, reason)
            d = req.extra.pop("pd_target", None)
            if d is None or not c.replicas[d].accepting:  # (crashed, or draining or stopped since the pick)
                cands = c._candidates(req) or []
                d = self._pick_decode(req, [i for i in cands if self.roles[i] == "decode"], now_s)
                if d is None:
                    c.replicas[src].engine.ports.release(key, now_s)
                    return
            self._send(req, src, d, key, now_s, step_s)
        return on_prefilled

    def _send(self, req: Request, src: int, dst: int, key: object, now_s: float, step_s: float) -> None:
        """Queue `req`'s KV (held on `src` under `key`) for a reservation at decode replica `dst`."""
        pool = self.pool_of[src]
        # the KV that exists: the prompt (plus, after a recompute, the tokens generated before)
        nbytes = kv_transfer_bytes(req.num_computed_tokens, pool.perf.kv_bytes_per_token, pool.tp)
        x = Transfer(req, src, dst, key, now_s, step_s, nbytes)
        self._in_flight[req.id] = x
        self.transfers.append(x)
        engine = self.cluster.replicas[dst].engine
        engine.ports.expect(req, engine.scheduler.transfer_tokens(req, req.num_computed_tokens), now_s)

    def on_crash(self, index: int, now_s: float) -> None:
        """Replica `index` is about to crash. Transfers from it lose their KV: their requests
        start over (re-routed, recomputed). Transfers to it go to another decode replica (the
        sender still holds the KV; the bytes are sent again). Its ports are reset."""
        c = self.cluster
        for x in [x for x in self._in_flight.values() if index in (x.src, x.dst)]:
            del self._in_flight[x.req.id]
            x.void = True  # (a flow still on the wire ends in nothing)
            if x.src == index:
                if x.dst != index:
                    c.replicas[x.dst].engine.ports.forget(x.req, now_s)
                self.decode_router.on_complete(x.req, x.dst, now_s)
                x.req.state = RequestState.WAITING
                x.req.num_computed_tokens = 0
                c.redispatch([x.req], index, now_s, left=True)
                continue
            self.decode_router.on_complete(x.req, index, now_s)
            cands = [i for i in (c._candidates(x.req) or []) if self.roles[i] == "decode" and i != index]
            d = self._pick_decode(x.req, cands, now_s)
            if d is None:  # ended (no decode replica left): the sender frees its blocks
                c.replicas[x.src].engine.ports.release(x.key, now_s)
            else:
                self._send(x.req, x.src, d, x.key, now_s, 0.0)
        ports = c.replicas[index].engine.ports
        if ports is not None:  # (a mixed replica has none: it serves its requests whole)
            ports.reset()

    def _reserved(self, dst: int):
        def on_reserved(req: Request, now_s: float) -> None:
            x = self._in_flight[req.id]
            x.start_s = now_s
            kind = "intra" if self.nodes[x.src] == self.nodes[dst] else "inter"
            x.link = kind
            spec = self.network.intra_node if kind == "intra" else self.network.inter_node
            link = self._link(x.src, kind, spec.bandwidth_GBps * 1e9 * self.pool_of[x.src].tp)
            layers = self.pool_of[x.src].perf.model_spec.num_layers
            sent = float(x.num_bytes)
            if self.network.layerwise_overlap and now_s == x.prefill_end_s:  # receiver ready during the prefill
                sent = exposed_bytes(sent, link.bandwidth_Bps, x.prefill_step_s, layers)
            fixed_s = fixed_time_s(spec, layers)
            loop = self.cluster.loop
            link.start(now_s, x, sent, lambda t: loop.schedule(t + fixed_s, self._arrived, x))
        return on_reserved

    def _link(self, src: int, kind: str, bandwidth_Bps: float) -> Link:
        link = self.links.get((src, kind))
        if link is None:
            link = self.links[(src, kind)] = Link(f"{src}-{kind}", bandwidth_Bps, self.cluster.loop)
        return link

    def _arrived(self, now_s: float, x: Transfer) -> None:
        if x.void:
            return  # its sender or receiver crashed meanwhile
        x.end_s = now_s
        del self._in_flight[x.req.id]
        c = self.cluster
        c.replicas[x.src].engine.ports.release(x.key, now_s)
        req = x.req
        # first token from the prefill replica: decode from here (its KV is not computed yet);
        # else the decode replica recomputes the last prompt token and samples the first
        # token (vLLM NixlConnector). Either way: every token's KV but the last one's.
        req.num_computed_tokens = req.num_tokens - 1
        req.kv_block_keys = None  # received blocks are not indexed by the receiver's prefix cache
        c.replicas[x.dst].receive(req, now_s)
