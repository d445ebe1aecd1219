"""Requests that concern every replica, not one: the admin calls that change what a replica holds
(model load/unload, LoRA load/unload), stop-generation, and `/metrics`. The ingress sends one copy
to each replica (pinned to it, as a stored response's calls are) and answers with the combination:
the first failure if any replica refused, else the first answer; `/metrics` is every replica's
samples, each labelled with its replica."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from homeport.cluster.forwarding import ResponseStart

# (method, path) of the calls every replica must get.
EVERY_REPLICA = frozenset({
    ("POST", "/v1/internal/model/load"),
    ("POST", "/v1/internal/model/unload"),
    ("POST", "/v1/internal/lora/load"),
    ("POST", "/v1/internal/lora/unload"),
    ("POST", "/v1/internal/stop-generation"),
    ("GET", "/metrics"),
})
REPLICA_PREFIX = "SERVE_REPLICA::"  # Serve's named actor of a replica: SERVE_REPLICA::app#deployment#id
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?( .*)$")


def concerns_every_replica(method: str, path: str) -> bool:
    return (method, path) in EVERY_REPLICA


def ray_replicas(app: str, deployment: str) -> Callable[[], list[str]]:
    """The ids of the deployment's live replicas, from Ray's named actors (no dashboard needed)."""

    def replicas() -> list[str]:
        import ray

        prefix = f"{REPLICA_PREFIX}{app}#{deployment}#"
        names = ray.util.list_named_actors(all_namespaces=True)
        return sorted(entry["name"][len(prefix):] for entry in names if entry["name"].startswith(prefix))

    return replicas


def combine(path: str, answers: Sequence[ResponseStart]) -> ResponseStart:
    """One answer for the client from every replica's (each a whole body)."""
    failed = [answer for answer in answers if answer.status >= 400]
    if path == "/metrics" and not failed:
        return _metrics(answers)
    first = failed[0] if failed else answers[0]
    names = ",".join(answer.replica for answer in answers)
    return ResponseStart(first.status, first.headers, first.body, False, names)


def _metrics(answers: Sequence[ResponseStart]) -> ResponseStart:
    """Every replica's exposition in one: each HELP/TYPE line once, every sample with `replica`."""
    seen: set[str] = set()
    families: dict[str, list[str]] = {}  # metric family (its HELP/TYPE name) → its lines, in order
    current = ""
    for answer in answers:
        label = 'replica="' + answer.replica.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for line in answer.body.decode().splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                current = parts[2] if len(parts) > 2 else current
                if line not in seen:
                    seen.add(line)
                    families.setdefault(current, []).append(line)
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, rest = match.groups()
            labels = "{" + label + ("," + labels[1:] if labels and labels != "{}" else "}")
            families.setdefault(current or name, []).append(f"{name}{labels}{rest}")
    body = "\n".join(line for lines in families.values() for line in lines) + "\n"
    data = body.encode()
    headers = [(k, v) for k, v in answers[0].headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(data)).encode()))
    return ResponseStart(200, headers, data, False, ",".join(a.replica for a in answers))
