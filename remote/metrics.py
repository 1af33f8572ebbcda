"""Prometheus metrics of one server; each app gets its own registry (tests start several)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from codeassist.remote.session import HEADER, RecentSessions, session_id

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("codeassist_time_to_first_token_seconds",
                              "Time from admission to the queue until the first generated token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("codeassist_request_latency_seconds",
                             "End-to-end generation latency of a sequence, queue wait included.",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.per_token = Histogram("codeassist_time_per_output_token_seconds",
                                   "Mean time between output tokens of a sequence after the first.",
                                   buckets=_TOKEN_BUCKETS, registry=r)
        # the autoscaler's signal (deploy/k8s/prometheus-adapter.yaml): a growing queue is what users feel
        self.queued = Gauge("codeassist_requests_queued", "Sequences waiting for a batch slot.", registry=r)
        self.running = Gauge("codeassist_requests_running", "Sequences in the running batch.", registry=r)
        self.rejected = Counter("codeassist_requests_rejected_total",
                                "Requests refused, by reason.", ["reason"], registry=r)
        self.finished = Counter("codeassist_sequences_finished_total",
                                "Sequences finished, by stop reason.", ["reason"], registry=r)
        self.tokens_in = Counter("codeassist_prompt_tokens_total", "Prompt tokens prefilled.", registry=r)
        self.tokens_out = Counter("codeassist_generated_tokens_total", "Tokens generated.", registry=r)
        self.batch_steps = Counter("codeassist_batch_steps_total", "Decode steps of the running batch.",
                                   registry=r)

        self.prefill_chunks = Counter("codeassist_prefill_chunks_total",
                                      "Piecewise prefill steps (cache hits and long prompts).", registry=r)
        self.cache_lookups = Counter("codeassist_prefix_cache_lookups_total",
                                     "Prompts looked up in the prefix cache.", registry=r)
        self.cache_hits = Counter("codeassist_prefix_cache_hits_total",
                                  "Prompts that reused a cached prefix (hit rate: hits / lookups).", registry=r)
        self.cache_reused_tokens = Counter("codeassist_prefix_cache_reused_tokens_total",
                                           "Prompt tokens taken from the prefix cache, not prefilled.", registry=r)
        self.cache_evictions = Counter("codeassist_prefix_cache_evictions_total",
                                       "Entries evicted from the prefix cache for room.", registry=r)
        self.cache_bytes = Gauge("codeassist_prefix_cache_bytes", "Bytes held by the prefix cache.", registry=r)

        self.session_requests = Counter(
            "codeassist_session_requests_total",
            "Completion requests by their X-Codeassist-Session header: valid, ignored (malformed) or absent.",
            ["header"], registry=r)
        self.recent_sessions = RecentSessions()
        self.sessions = Gauge("codeassist_sessions_recent",
                              "Distinct editor sessions seen in the last 5 minutes (affinity: replicas' "
                              "counts add up to the users).", registry=r)
        self.sessions.set_function(self.recent_sessions.count)

    def note_session(self, headers: Mapping[str, str]) -> str | None:
        """The request's session id (None if absent or malformed), counted."""
        sid = session_id(headers)
        kind = "valid" if sid else "absent" if headers.get(HEADER) is None else "ignored"
        self.session_requests.labels(header=kind).inc()
        if sid:
            self.recent_sessions.see(sid)
        return sid

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
