"""The network between replicas: link kinds, KV transfer sizes and times, and shared links.

Pure functions give a transfer's bytes and its exposed time on an idle link; `Link` is the
small simulator used when transfers overlap: every transfer on a link gets an equal share of
its bandwidth (processor sharing, which is max-min fair when each transfer crosses one
bottleneck, as the spec's `Flow` on a `Link`). A transfer's fixed latency and per-message
overheads do not hold bandwidth: they are added after its bytes are through.

Placement and which link a transfer uses (servesim's choices, see docs/disaggregation.md):
replicas are packed on nodes of `gpus_per_node` GPUs in scenario order (pools in order, a
replica never straddles nodes). A transfer between replicas on one node uses `intra_node`
(NVLink); across nodes `inter_node` (one NIC per GPU, GPUDirect RDMA). Each GPU has its own
link, so a TP-k replica sends its k shards in parallel over k links: the bandwidth of a
replica's egress is k times the per-GPU figure, and every transfer leaving a replica shares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.errors import InputError

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class LinkSpec(BaseModel):
    """One GPU's link of a kind: unidirectional bandwidth, latency and per-message overhead."""

    model_config = _STRICT

    bandwidth_GBps: float = Field(50.0, gt=0)
    """Unidirectional bandwidth per GPU, in 1e9 bytes per second (must be > 0)."""
    latency_s: float = Field(5e-6, ge=0)
    """One-way latency added once per transfer."""
    per_message_s: float = Field(0.0, ge=0)
    """Overhead per message (a transfer sends one message per layer: NIXL/UCX post one
    descriptor list per layer's blocks)."""


# Defaults per GPU, unidirectional. Sources: NVIDIA H100 / A100 datasheets (NVLink 4: 900 GB/s
# bidirectional, NVLink 3: 600 GB/s), ConnectX-7 (NDR 400 Gb/s) and ConnectX-6 (HDR 200 Gb/s,
# DGX-A100's 8 x 200 Gb/s), splitwise-sim `kv_round_robin_ethernet.yaml` (12.5 GB/s Ethernet).
# Latencies and message overheads are servesim's order-of-magnitude choices (RDMA ~5 us, RoCE
# ~10 us, kernel TCP ~50 us; ~10 us per posted RDMA work request batch).
LINK_KINDS: dict[str, LinkSpec] = {
    "nvlink4": LinkSpec(bandwidth_GBps=450.0, latency_s=2e-6, per_message_s=2e-6),
    "nvlink3": LinkSpec(bandwidth_GBps=300.0, latency_s=2e-6, per_message_s=2e-6),
    "ib-ndr": LinkSpec(bandwidth_GBps=50.0, latency_s=5e-6, per_message_s=10e-6),
    "ib-hdr": LinkSpec(bandwidth_GBps=25.0, latency_s=5e-6, per_message_s=10e-6),
    "roce-400g": LinkSpec(bandwidth_GBps=50.0, latency_s=10e-6, per_message_s=10e-6),
    "ethernet-100g": LinkSpec(bandwidth_GBps=12.5, latency_s=50e-6, per_message_s=20e-6),
}


def _link(value: str | dict | LinkSpec, where: str) -> LinkSpec:
    if isinstance(value, LinkSpec):
        return value
    if isinstance(value, str):
        if value not in LINK_KINDS:
            raise InputError(f"network.{where}: unknown link kind '{value}'; allowed: {', '.join(LINK_KINDS)} "
                             "or {bandwidth_GBps, latency_s, per_message_s}")
        return LINK_KINDS[value]
    return LinkSpec.model_validate(value)


class NetworkConfig(BaseModel):
    """Links between replicas and how KV moves over them."""

    model_config = _STRICT

    intra_node: LinkSpec | str = Field("nvlink4", validate_default=True)
    """Link between GPUs of one node: a kind (nvlink4, nvlink3, ...) or {bandwidth_GBps, latency_s, per_message_s}."""
    inter_node: LinkSpec | str = Field("ib-ndr", validate_default=True)
    """Link between nodes (per GPU): a kind (ib-ndr, ib-hdr, roce-400g, ethernet-100g) or a spec."""
    layerwise_overlap: bool = False
    """Send each layer's KV as soon as the prefill computed it (Splitwise, Mooncake); off:
    the transfer starts when the prefill ends (vLLM's NixlConnector, DistServe)."""

    @field_validator("intra_node", "inter_node", mode="before")
    @classmethod
    def _kind(cls, value: Any, info: ValidationInfo) -> Any:
        return _link(value, info.field_name) if isinstance(value, str) else value


# ---------------------------------------------------------------- pure functions
def kv_transfer_bytes(num_tokens: int, kv_bytes_per_token_per_gpu: int, tp: int) -> int:
    """Bytes of KV a replica holds for `num_tokens` tokens (all layers, all TP shards; the
    perf model's per-GPU figure already reflects the KV dtype, FP8 included)."""
    return num_tokens * kv_bytes_per_token_per_gpu * tp


def fixed_time_s(link: LinkSpec, num_layers: int) -> float:
    """Latency plus one message per layer: the part of a transfer that holds no bandwidth."""
    return link.latency_s + num_layers * link.per_message_s


def exposed_bytes(total_bytes: float, bandwidth_Bps: float, prefill_s: float, num_layers: int) -> float:
    """Bytes still to send when the prefill ends, if layer l's KV leaves as soon as layer l is
    computed (layers take prefill_s / L each): the first L - 1 layers go out during the
    prefill, as far as the link keeps up. The last layer is always left (spec §1.5)."""
    hidden = min(total_bytes * (num_layers - 1) / num_layers, bandwidth_Bps * prefill_s * (num_layers - 1) / num_layers)
    return total_bytes - hidden


def transfer_time_s(total_bytes: float, link: LinkSpec, num_links: int, num_layers: int,
                    overlap_prefill_s: float = 0.0) -> float:
    """Time from the end of the prefill to the KV being usable at the receiver, on idle links."""
    bw = link.bandwidth_GBps * 1e9 * num_links
    sent = exposed_bytes(total_bytes, bw, overlap_prefill_s, num_layers) if overlap_prefill_s > 0 else total_bytes
    return sent / bw + fixed_time_s(link, num_layers)


# ---------------------------------------------------------------- shared links
@dataclass(slots=True)
class _Flow:
    key: object
    remaining_bytes: float
    on_done: Callable[[float], None]


class Link:
    """A link whose concurrent transfers share its bandwidth equally (processor sharing).

    Completion is one pending loop event for the flow that ends first; any start or end
    re-plans it (an older event is recognised by its generation and ignored).
    """

    def __init__(self, name: str, bandwidth_Bps: float, loop: EventLoop) -> None:
        self.name = name
        self.bandwidth_Bps = bandwidth_Bps
        self.loop = loop
        self._flows: list[_Flow] = []
        self._last_s = 0.0
        self._gen = 0
        self.busy_s = 0.0  # time with at least one flow
        self.bytes_sent = 0.0
        self.max_flows = 0

    def start(self, now_s: float, key: object, num_bytes: float, on_done: Callable[[float], None]) -> None:
        """Begin sending `num_bytes`; `on_done(t)` runs when they are through."""
        self._progress(now_s)
        self._flows.append(_Flow(key, float(num_bytes), on_done))
        self.max_flows = max(self.max_flows, len(self._flows))
        self._plan(now_s)

    def _progress(self, now_s: float) -> None:
        flows = self._flows
        if flows:
            dt = now_s - self._last_s
            share = dt * self.bandwidth_Bps / len(flows)
            for f in flows:
                f.remaining_bytes -= share
            self.busy_s += dt
            self.bytes_sent += share * len(flows)
        self._last_s = now_s

    def _plan(self, now_s: float) -> None:
        self._gen += 1
        if self._flows:
            first = min(self._flows, key=lambda f: f.remaining_bytes)
            end_s = now_s + max(first.remaining_bytes, 0.0) * len(self._flows) / self.bandwidth_Bps
            self.loop.schedule(end_s, self._on_end, self._gen, PRIO_ARRIVAL)

    def _on_end(self, now_s: float, gen: int) -> None:
        if gen != self._gen:
            return
        self._progress(now_s)
        # every flow within a byte of done ends now (ties end in start order)
        done = [f for f in self._flows if f.remaining_bytes <= 1.0]
        self._flows = [f for f in self._flows if f.remaining_bytes > 1.0]
        self._plan(now_s)
        for f in done:
            f.on_done(now_s)

    def cancel(self, now_s: float, key: object) -> None:
        """Abandon the flow `key` (its sender or receiver failed)."""
        self._progress(now_s)
        self._flows = [f for f in self._flows if f.key is not key]
        self._plan(now_s)


def place_on_nodes(gpus_per_replica: list[int], gpus_per_node: list[int]) -> list[int]:
    """Node index of each replica, packed in order; a replica that does not fit in what is
    left of the current node starts a new node."""
    nodes, node, used = [], 0, 0
    for g, cap in zip(gpus_per_replica, gpus_per_node):
        if used and used + g > cap:
            node, used = node + 1, 0
        nodes.append(node)
        used += g
        if used >= cap:
            node, used = node + 1, 0
    return nodes
