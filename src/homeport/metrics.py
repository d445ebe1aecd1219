"""Prometheus metrics: one process-wide registry of homeport's own (not prometheus_client's global
one, so nothing a library registers leaks into /metrics), served by api/metrics.py.

Engines, the model manager and the HTTP layer record here directly; this module imports nothing of
homeport's, so every layer may use it. Labels are route templates, model ids, kinds and outcomes:
never a prompt, a path with ids in it, or a key. Gauges that are a snapshot (running and queued
sequences) are read at scrape time from the model managers that `watch` registers.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets (seconds): a 135M model on 2 cores is ~10 ms a token; a cold prompt can take seconds.
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter("homeport_http_requests", "HTTP requests answered, by route template and status",
                        ("method", "route", "status"), registry=REGISTRY)
HTTP_SECONDS = Histogram("homeport_http_request_duration_seconds", "Time until a response ends (streams: until the last byte)",
                         ("route",), buckets=_JOB_BUCKETS, registry=REGISTRY)

TIME_TO_FIRST_TOKEN = Histogram("homeport_time_to_first_token_seconds",
                                "From a generation's arrival at its engine to its first token",
                                ("model",), buckets=_FIRST_TOKEN_BUCKETS, registry=REGISTRY)
INTER_TOKEN = Histogram("homeport_inter_token_latency_seconds", "Between consecutive tokens of one generation",
                        ("model",), buckets=_TOKEN_BUCKETS, registry=REGISTRY)
PROMPT_TOKENS = Counter("homeport_prompt_tokens", "Prompt tokens of generations that started decoding",
                        ("model",), registry=REGISTRY)
PREFIX_CACHE_TOKENS = Counter("homeport_prefix_cache_reused_tokens", "Prompt tokens taken from the prefix cache",
                              ("model",), registry=REGISTRY)
GENERATED_TOKENS = Counter("homeport_generation_tokens", "Tokens generated", ("model",), registry=REGISTRY)
GENERATIONS = Counter("homeport_generations", "Generations ended, by outcome (completed, cancelled, failed)",
                      ("model", "outcome"), registry=REGISTRY)
DRAFTED_TOKENS = Counter("homeport_speculative_draft_tokens", "Draft tokens proposed by speculative decoding",
                         ("model",), registry=REGISTRY)
ACCEPTED_TOKENS = Counter("homeport_speculative_accepted_tokens", "Draft tokens the model agreed with",
                          ("model",), registry=REGISTRY)

MODEL_LOADS = Counter("homeport_model_loads", "Model loads, by kind and outcome (loaded, failed)",
                      ("kind", "outcome"), registry=REGISTRY)
MODEL_LOAD_SECONDS = Histogram("homeport_model_load_seconds", "Time a successful model load took", ("kind",),
                               buckets=_JOB_BUCKETS, registry=REGISTRY)
MODEL_EVICTIONS = Counter("homeport_model_evictions", "Models unloaded to make room for another", ("kind",),
                          registry=REGISTRY)
JOB_SECONDS = Histogram("homeport_job_duration_seconds",
                        "Whole jobs of the non-text kinds (embeddings, rerank, images, transcription, speech)",
                        ("kind",), buckets=_JOB_BUCKETS, registry=REGISTRY)


class _ModelGauges:
    """Running and queued sequences (and loaded models) per model, read from the watched model
    manager's engines at scrape time (one per process: the app being served)."""

    def __init__(self) -> None:
        self._manager: weakref.ref | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = GaugeMetricFamily("homeport_sequences_running", "Sequences being decoded", labels=("model",))
        queued = GaugeMetricFamily("homeport_sequences_queued", "Requests waiting for a sequence", labels=("model",))
        loaded = GaugeMetricFamily("homeport_models_loaded", "Models loaded, by kind", labels=("kind",))
        kinds: dict[str, int] = {}
        manager = self._manager() if self._manager is not None else None
        if manager is not None:
            for model in manager.loaded(None):
                stats = model.engine.stats()
                running.add_metric((model.entry.id,), stats.active)
                queued.add_metric((model.entry.id,), stats.queued)
                kinds[model.entry.kind] = kinds.get(model.entry.kind, 0) + 1
        for kind, count in sorted(kinds.items()):
            loaded.add_metric((kind,), count)
        yield from (running, queued, loaded)

    def describe(self) -> list:
        return []  # no fixed description: the families depend on what is loaded

    def watch(self, manager: Any) -> None:
        self._manager = weakref.ref(manager)


_GAUGES = _ModelGauges()
REGISTRY.register(_GAUGES)


def watch(manager: Any) -> None:
    """Report this model manager's loaded models in the snapshot gauges (held weakly; the last app
    built in the process wins)."""
    _GAUGES.watch(manager)
