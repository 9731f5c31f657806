"""Prometheus metrics under vLLM's names, types, labels and histogram buckets (vLLM v1's
PrometheusStatLogger), so dashboards and autoscalers built for vLLM read the emulator as is.

Request-level histograms are observed from the simulation's timestamps, converted to wall
seconds (times time_scale); gauges and prefix-cache counters are read from the replica at
scrape time.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from servesim.workload.request import Request, RequestState

LABELS = ["model_name", "engine"]
TTFT_BUCKETS_S = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                  20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TOKEN_LATENCY_BUCKETS_S = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                           10.0, 20.0, 40.0, 80.0]
REQUEST_LATENCY_BUCKETS_S = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                             120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
FINISH_REASONS = ("stop", "length", "abort")


def buckets_1_2_5(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to max_value (vLLM's build_1_2_5_buckets)."""
    out, exp = [], 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > max_value:
                return out
            out.append(v)
        exp += 1


class ServeMetrics:
    """The registry of one server and the observer the driver reports to."""

    def __init__(self, driver, model_name: str) -> None:
        self.driver = driver
        self.scale = driver.time_scale
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = (model_name, "0")
        reg, lab = self.registry, self.labels

        def hist(name: str, doc: str, buckets):
            return Histogram(name, doc, LABELS, buckets=buckets, registry=reg).labels(*lab)

        def counter(name: str, doc: str):
            return Counter(name, doc, LABELS, registry=reg).labels(*lab)

        len_buckets = buckets_1_2_5(driver.config.max_model_len)
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          LABELS + ["finished_reason"], registry=reg)
        self.success = {r: success.labels(*lab, r) for r in FINISH_REASONS}
        self.req_prompt = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", len_buckets)
        self.req_generation = hist("vllm:request_generation_tokens", "Number of generation tokens processed.",
                                   len_buckets)
        self.req_max_tokens = hist("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                                   len_buckets)
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         TTFT_BUCKETS_S)
        self.itl = [hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                         TOKEN_LATENCY_BUCKETS_S),
                    hist("vllm:time_per_output_token_seconds",  # the older name of the same histogram
                         "Histogram of time per output token in seconds.", TOKEN_LATENCY_BUCKETS_S)]
        self.tpot = hist("vllm:request_time_per_output_token_seconds",
                         "Histogram of time_per_output_token_seconds per request.", TOKEN_LATENCY_BUCKETS_S)
        self.phases = {name: hist(f"vllm:{name}_seconds", doc, REQUEST_LATENCY_BUCKETS_S) for name, doc in (
            ("e2e_request_latency", "Histogram of e2e request latency in seconds."),
            ("request_queue_time", "Histogram of time spent in WAITING phase for request."),
            ("request_inference_time", "Histogram of time spent in RUNNING phase for request."),
            ("request_prefill_time", "Histogram of time spent in PREFILL phase for request."),
            ("request_decode_time", "Histogram of time spent in DECODE phase for request."))}
        reg.register(_ReplicaCollector(driver, lab))

    # ---------------------------------------------------------------- driver observer
    def on_token(self, req: Request, num_new: int, time_s: float, prev_s: float | None) -> None:
        self.generation_tokens.inc(num_new)
        if prev_s is None:
            self.prompt_tokens.inc(req.prompt_len)
            self.ttft.observe((time_s - req.arrival_s) * self.scale)
        else:
            for h in self.itl:
                h.observe((time_s - prev_s) * self.scale)

    def on_preemption(self, req: Request) -> None:
        self.preemptions.inc()

    def on_done(self, req: Request, time_s: float) -> None:
        if req.state == RequestState.ABORTED:
            self.success["abort"].inc()
            return
        if req.state != RequestState.FINISHED:
            return
        s = self.scale
        self.success[req.extra.get("finish_reason", "length")].inc()
        self.req_prompt.observe(req.prompt_len)
        self.req_generation.observe(req.num_output_tokens)
        if req.max_tokens is not None:
            self.req_max_tokens.observe(req.max_tokens)
        first_token_s = req.first_token_s
        scheduled_s = req.first_scheduled_s if req.first_scheduled_s is not None else req.arrival_s
        p = self.phases
        p["e2e_request_latency"].observe((time_s - req.arrival_s) * s)
        p["request_queue_time"].observe((scheduled_s - req.arrival_s) * s)
        p["request_inference_time"].observe((time_s - scheduled_s) * s)
        p["request_prefill_time"].observe((first_token_s - scheduled_s) * s)
        p["request_decode_time"].observe((time_s - first_token_s) * s)
        if req.num_output_tokens > 1:
            self.tpot.observe((time_s - first_token_s) / (req.num_output_tokens - 1) * s)


class _ReplicaCollector:
    """Scheduler and KV-cache state read at scrape time (after advancing to now)."""

    def __init__(self, driver, labels: tuple[str, str]) -> None:
        self.driver = driver
        self.labels = list(labels)

    def describe(self):
        return []

    def collect(self):
        d = self.driver
        if d.error is None:
            with contextlib.suppress(Exception):  # a failure is reported by /health and the requests
                d.advance()
        usage = 1.0 - d.kv.num_free_blocks / d.kv.num_gpu_blocks
        gauges = (("vllm:num_requests_running", "Number of requests in model execution batches.",
                   d.scheduler.num_running),
                  ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                   d.scheduler.num_waiting + len(d.scheduler.swapped)),
                  ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
                  ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage. "
                   "DEPRECATED: Use vllm:kv_cache_usage_perc instead.", usage))
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(self.labels, value)
            yield g
        # servesim's own: where simulated time 0 is on the wall clock (not a vLLM metric)
        g = GaugeMetricFamily("servesim:clock_origin_unix_seconds", "Unix time of simulated time 0; a simulated "
                              "time t (the served trace's arrival_s) is this plus t x time_scale.", labels=LABELS)
        g.add_metric(self.labels, d.origin_unix_s)
        yield g
        counters = (("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                     d.kv.num_queried_tokens),
                    ("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                     d.kv.num_hit_tokens))
        for name, doc, value in counters:
            for prefix in ("vllm:", "vllm:gpu_"):
                c = CounterMetricFamily(prefix + name, doc, labels=LABELS)
                c.add_metric(self.labels, value)
                yield c
