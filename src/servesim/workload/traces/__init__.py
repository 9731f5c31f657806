"""Trace files: the schema, streaming readers and writers, and the registry of shipped names."""

from servesim.workload.traces.readers import Row, TraceReader
from servesim.workload.traces.registry import SHIPPED_TRACES, resolve_trace

__all__ = ["Row", "SHIPPED_TRACES", "TraceReader", "resolve_trace"]
