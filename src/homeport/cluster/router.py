"""The Serve request router: the replica holding the longest prefix of the prompt, then the least
queued. It runs inside the ingress process (Serve builds one per deployment handle), so the
prompts it remembers never leave that process."""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from homeport.cluster.prefix import PrefixAffinity

ROUTER_PATH = "homeport.cluster.router:PrefixAffinityRouter"


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    """A request naming a stored response goes to the replica that holds it (while it lives).
    Otherwise ranks: [replicas with the best prefix match, or for a new prompt those remembered for the
    least text], [replicas that have the requested model loaded], then [every replica]. Serve takes the least queued replica of the first rank that
    has a free slot, so a busy favourite spills over."""

    def initialize_state(self, min_share: float = 0.5, min_chars: int = 64, imbalance: int = 4, **_: Any) -> None:
        self._affinity = PrefixAffinity(min_share=min_share, min_chars=min_chars)
        self._imbalance = imbalance  # queue-length lead past which the favourite is not preferred

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        request = pending_request.args[0] if pending_request is not None and pending_request.args else None
        key, model = getattr(request, "prompt_key", None), getattr(request, "model", None)
        if not candidate_replicas:
            return [candidate_replicas]
        pin = getattr(request, "pin", None)
        pinned = [r for r in candidate_replicas if pin is not None and r.replica_id.unique_id == pin]
        if pinned:  # a stored response lives on its replica: only that one can answer for it
            return [pinned]
        ranks = []
        if key is not None:
            by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
            # A known conversation: where its prefix is; a new one: where the least is cached.
            names = self._affinity.best(key, by_id)[0] or self._affinity.smallest(by_id)
            preferred = [by_id[name] for name in names]
            if len(preferred) < len(candidate_replicas) and not self._uneven(preferred, candidate_replicas):
                ranks.append(preferred)
        if model is not None:
            holding = [r for r in candidate_replicas if model in (r.routing_stats or {}).get("loaded", ())]
            if holding and len(holding) < len(candidate_replicas):
                ranks.append(holding)
        return [*ranks, candidate_replicas]

    def _uneven(self, preferred: list[RunningReplica], everyone: list[RunningReplica]) -> bool:
        def queued(replica: RunningReplica) -> int:
            return self._replica_queue_len_cache.get(replica.replica_id) or 0

        return min(map(queued, preferred)) - min(map(queued, everyone)) > self._imbalance

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        key = _prompt_key(pending_request)
        if key is not None:
            self._affinity.record(replica_id.unique_id, key)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._affinity.forget(replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._affinity.keep_only(replica.replica_id.unique_id for replica in replicas)


def _prompt_key(pending_request: PendingRequest | None) -> str | None:
    if pending_request is None or not pending_request.args:
        return None
    return getattr(pending_request.args[0], "prompt_key", None)
