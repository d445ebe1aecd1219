"""homeport.cluster without a cluster: prompt keys and prefix affinity, the router's ranking, the
privacy environment, settings and flags, and no Ray without --ray-address. The request path (the
replica's ASGI bridge and the ingress) is in test_cluster_ingress.py."""

from __future__ import annotations

import json

import subprocess
import sys
from types import SimpleNamespace

import pytest

from homeport.cluster.forwarding import ForwardedRequest
from homeport.cluster.prefix import PrefixAffinity, prompt_key, routing_fields
from homeport.cluster.privacy import CLOSED_PORT_URL, ray_environment
from homeport.settings import SettingsError, load_settings

JSON = {"content-type": "application/json"}


def chat(messages, **extra) -> bytes:
    import json

    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


# --- prompt keys and affinity ---------------------------------------------------------------

def test_prompt_key_keeps_the_conversation_in_order_so_a_longer_history_extends_it():
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    longer = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    short_key, long_key = prompt_key("/v1/chat/completions", chat(first)), prompt_key("/v1/chat/completions", chat(longer))
    assert long_key.startswith(short_key)
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert "hello" in prompt_key("/v1/chat/completions", chat(parts))
    assert "once upon" in prompt_key("/v1/completions", b'{"model": "m", "prompt": "once upon"}')
    assert routing_fields("/v1/completions", b'{"model": "m", "prompt": "x"}')[0] == "m"


@pytest.mark.parametrize("path, body", [
    ("/v1/models", b""), ("/v1/chat/completions", b"not json"), ("/v1/chat/completions", b"[1, 2]"),
    ("/v1/embeddings", b'{"model": "m"}'), ("/health/ready", b'{"prompt": "x"}'),
])
def test_requests_without_a_prompt_have_no_key(path, body):
    assert prompt_key(path, body) is None


def test_affinity_prefers_the_replica_with_the_longest_prefix_and_ignores_short_matches():
    affinity = PrefixAffinity(min_share=0.5, min_chars=10)
    history = "m\x1esystem:" + "x" * 200
    affinity.record("a", history)
    affinity.record("b", "m\x1esystem:" + "y" * 200)
    assert affinity.best(history + "\x1fuser:next question", ["a", "b"]) == (["a"], len(history))
    assert affinity.best("m\x1esystem:zzz" + "z" * 300, ["a", "b"]) == ([], 0)  # only the head matches
    assert affinity.best(history, ["b"]) == ([], 0)  # "a" is not a candidate (busy, gone)
    affinity.forget("a")
    assert affinity.best(history, ["a", "b"]) == ([], 0)


def test_affinity_names_the_replicas_remembered_for_the_least_text():
    affinity = PrefixAffinity()
    affinity.record("a", "x" * 100)
    affinity.record("b", "y" * 10)
    assert affinity.smallest(["a", "b", "c"]) == ["c"]
    assert affinity.smallest(["a", "b"]) == ["b"]


def test_affinity_keeps_a_bounded_memory_and_drops_replicas_that_left():
    affinity = PrefixAffinity(min_share=0.5, min_chars=1, keep=2)
    for key in ("k1" * 20, "k2" * 20, "k3" * 20):
        affinity.record("a", key)
    assert affinity.best("k1" * 20, ["a"]) == ([], 0)
    assert affinity.best("k3" * 20, ["a"])[0] == ["a"]
    affinity.record("b", "k9" * 20)
    affinity.keep_only(["a"])
    assert affinity.best("k9" * 20, ["a", "b"]) == ([], 0)


def _router(imbalance=4, queues=None):
    pytest.importorskip("ray")
    from homeport.cluster.router import PrefixAffinityRouter

    router = PrefixAffinityRouter.__new__(PrefixAffinityRouter)  # its Serve plumbing is not needed here
    router._affinity = PrefixAffinity(min_share=0.5, min_chars=10)
    router._imbalance = imbalance
    router._replica_queue_len_cache = SimpleNamespace(get=lambda rid: (queues or {}).get(rid.unique_id))
    return router


def _replica(name, loaded=()):
    return SimpleNamespace(replica_id=SimpleNamespace(unique_id=name), routing_stats={"loaded": list(loaded)})


def _pending(body: bytes):
    model, key = routing_fields("/v1/chat/completions", body)
    return SimpleNamespace(args=[ForwardedRequest("POST", "/v1/chat/completions", b"", [], body,
                                                  prompt_key=key, model=model)])


async def test_router_ranks_the_prefix_holder_first_then_everyone():
    router = _router()
    a, b = _replica("a"), _replica("b")
    history = [{"role": "system", "content": "long shared context " * 20}, {"role": "user", "content": "q1"}]
    assert await router.choose_replicas([a, b], _pending(chat(history))) == [[a, b]]  # nothing known yet
    router.on_request_routed(_pending(chat(history)), b.replica_id, None)
    assert await router.choose_replicas([a, b], _pending(chat(history))) == [[b], [a, b]]
    assert await router.choose_replicas([a, b], _pending(b"{}")) == [[a, b]]
    # A new conversation goes where the least is cached: "a" here.
    other = [{"role": "system", "content": "unrelated " * 30}, {"role": "user", "content": "q"}]
    assert await router.choose_replicas([a, b], _pending(chat(other))) == [[a], [a, b]]


async def test_a_stored_response_is_answered_by_the_replica_that_holds_it():
    from homeport.cluster.prefix import stored_home
    from homeport.services import ids

    ids.set_home("b7x")
    try:
        stored = ids.stored_id("resp")
    finally:
        ids.set_home("")
    assert stored.startswith("resp_b7x-") and ids.home_of(stored) == "b7x"
    assert ids.home_of(ids.stored_id("resp")) is None  # a single server's ids name no replica
    assert stored_home(f"/v1/responses/{stored}", b"") == "b7x"
    assert stored_home(f"/v1/responses/{stored}/input_items", b"") == "b7x"
    assert stored_home("/v1/responses", json.dumps({"previous_response_id": stored}).encode()) == "b7x"
    assert stored_home("/v1/responses", b'{"input": "hi"}') is None
    referenced = {"input": [{"type": "item_reference", "id": "msg_b7x-0123abcd"}, {"role": "user", "content": "hi"}]}
    assert stored_home("/v1/responses", json.dumps(referenced).encode()) == "b7x"
    assert stored_home("/v1/responses", b'{"input": [{"type": "item_reference", "id": "msg_0123abcd"}]}') is None
    assert stored_home("/v1/chat/completions", json.dumps({"previous_response_id": stored}).encode()) is None
    router = _router()
    a, b = _replica("a"), _replica("b7x")
    request = ForwardedRequest("GET", f"/v1/responses/{stored}", b"", [], b"", pin="b7x")
    assert await router.choose_replicas([a, b], SimpleNamespace(args=[request])) == [[b]]
    gone = ForwardedRequest("GET", "/v1/responses/x", b"", [], b"", pin="dead")  # its replica is gone: anyone
    assert await router.choose_replicas([a, b], SimpleNamespace(args=[gone])) == [[a, b]]


async def test_router_prefers_replicas_that_have_the_requested_model_loaded():
    router = _router()
    a, b, c = _replica("a", ["m", "other"]), _replica("b", ["other"]), _replica("c", ["m"])
    assert await router.choose_replicas([a, b, c], _pending(chat([{"role": "user", "content": "q"}]))) == [
        [a, c], [a, b, c]]
    everyone = [_replica("a", ["m"]), _replica("b", ["m"])]  # no preference when all (or none) have it
    assert await router.choose_replicas(everyone, _pending(chat([{"role": "user", "content": "q"}]))) == [everyone]


async def test_router_lets_a_busy_favourite_go_when_the_load_is_uneven():
    router = _router(imbalance=2, queues={"a": 0, "b": 5})
    a, b = _replica("a"), _replica("b")
    history = [{"role": "user", "content": "long shared context " * 20}]
    router.on_request_routed(_pending(chat(history)), b.replica_id, None)
    assert await router.choose_replicas([a, b], _pending(chat(history))) == [[a, b]]  # the least queued wins


# --- privacy --------------------------------------------------------------------------------

def test_ray_environment_turns_off_usage_stats_and_points_every_proxy_at_a_closed_loopback_port():
    env = ray_environment(["10.0.0.5:6379", "10.0.0.6"], token="t0k")
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_USAGE_STATS_REPORT_URL"].startswith(CLOSED_PORT_URL)
    assert CLOSED_PORT_URL.startswith("http://127.0.0.1:")
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert env[name] == CLOSED_PORT_URL
    assert env["no_proxy"].split(",")[-2:] == ["10.0.0.5", "10.0.0.6"]
    assert "127.0.0.1" in env["no_proxy"].split(",")
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t0k"
    assert "RAY_AUTH_TOKEN" not in ray_environment([])  # connecting keeps the cluster's own token


def test_privacy_module_prints_export_lines():
    out = subprocess.run([sys.executable, "-m", "homeport.cluster.privacy", "--new-token", "10.1.1.1"],
                         capture_output=True, text=True, check=True).stdout
    assert "export RAY_USAGE_STATS_ENABLED='0'" in out and "10.1.1.1" in out and "export RAY_AUTH_TOKEN=" in out


# --- settings, flags, and no Ray without --ray-address ---------------------------------------

def test_cluster_settings_from_flags_and_their_checks(tmp_path):
    settings = load_settings({"ray_address": "10.0.0.5:6379", "replicas": 3, "user_data_dir": tmp_path}, {})
    assert (settings.ray_address, settings.replicas, settings.min_replicas) == ("10.0.0.5:6379", 3, None)
    assert load_settings({"ray_address": "", "user_data_dir": tmp_path}, {}).ray_address is None
    with pytest.raises(SettingsError, match="min_replicas"):
        load_settings({"min_replicas": 4, "max_replicas": 2, "user_data_dir": tmp_path}, {})
    with pytest.raises(SettingsError, match="replicas"):
        load_settings({"replicas": 0, "user_data_dir": tmp_path}, {})
    with pytest.raises(SettingsError, match="ingress_only needs ray_address"):
        load_settings({"ingress_only": True, "user_data_dir": tmp_path}, {})
    assert load_settings({"ray_address": "local", "ingress_only": True, "user_data_dir": tmp_path}, {}).ingress_only


def test_cluster_flags_parse():
    from homeport.cli import build_parser

    args = build_parser().parse_args(["serve", "--ray-address", "local", "--min-replicas", "1", "--max-replicas", "4",
                                      "--target-ongoing-requests", "3", "--replica-cpus", "0.5"])
    assert (args.ray_address, args.min_replicas, args.max_replicas) == ("local", 1, 4)
    assert (args.target_ongoing_requests, args.replica_cpus) == (3.0, 0.5)
    assert build_parser().parse_args(["serve", "--ray-address", "h:6379", "--ingress-only"]).ingress_only is True
    assert build_parser().parse_args(["serve", "--ray-address", "h:6379"]).node_ingress is None  # Settings decides
    assert build_parser().parse_args(["serve", "--no-node-ingress"]).node_ingress is False


def test_node_ingress_is_on_by_default_and_a_flag_turns_it_off(tmp_path):
    from homeport.cluster.launch import _node_ingresses

    assert load_settings({"ray_address": "local", "user_data_dir": tmp_path}, {}).node_ingress is True
    off = load_settings({"ray_address": "local", "node_ingress": False, "user_data_dir": tmp_path}, {})
    only = load_settings({"ray_address": "local", "ingress_only": True, "user_data_dir": tmp_path}, {})
    assert off.node_ingress is False
    assert _node_ingresses(off, 5000) is None and _node_ingresses(only, 5000) is None  # no thread, no Ray


def test_a_node_ingress_binds_the_drivers_wildcards_or_else_the_nodes_address():
    from homeport.cluster.node_ingress import actor_name, node_hosts

    assert node_hosts(("::", "0.0.0.0"), "10.0.0.2") == ["::", "0.0.0.0"]
    assert node_hosts(("0.0.0.0",), "10.0.0.2") == ["0.0.0.0"]
    assert node_hosts(("127.0.0.1",), "10.0.0.2") == ["127.0.0.1"]  # asked for on loopback: stays there
    assert node_hosts(("127.0.0.2",), "127.0.0.3") == ["127.0.0.3"]  # a loopback cluster (the tests')
    assert node_hosts(("10.0.0.1",), "10.0.0.2") == ["10.0.0.2"]
    assert actor_name("0123456789abcdef" * 4) == "homeport-ingress-0123456789ab"


def test_a_node_ingress_whose_port_is_taken_says_so_and_starts_nothing(tmp_path):
    import socket

    from homeport.cluster.node_ingress import NodeIngress
    from homeport.errors import StartupError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        ingress = NodeIngress("127.0.0.1", ["127.0.0.1"], port, {})
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            ingress.ready()
        assert ingress.thread is None
        ingress.drain()  # nothing to drain: returns
    finally:
        taken.close()
    missing = NodeIngress("127.0.0.1", ["127.0.0.1"], 0, {"ssl_certfile": str(tmp_path / "cert.pem"),
                                                          "ssl_keyfile": str(tmp_path / "key.pem")})
    with pytest.raises(StartupError, match="TLS certificate file not found on this node"):
        missing.ready()


def test_start_up_imports_no_ray():
    code = ("import sys, homeport.cli, homeport.server, homeport.app, homeport.settings; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_deployment_options_size_the_replicas_to_the_engine_slots(tmp_path):
    pytest.importorskip("ray")
    from homeport.cluster.launch import deployment_options, replica_settings

    fixed = load_settings({"ray_address": "local", "replicas": 2, "parallel": 3, "user_data_dir": tmp_path}, {})
    options = deployment_options(fixed)
    assert options["max_ongoing_requests"] == 3 and options["num_replicas"] == 2
    assert options["request_router_config"].request_router_class == "homeport.cluster.router:PrefixAffinityRouter"
    scaled = load_settings({"ray_address": "local", "min_replicas": 1, "max_replicas": 4, "user_data_dir": tmp_path}, {})
    auto = deployment_options(scaled)["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 4, 2.0)
    assert "num_replicas" not in deployment_options(scaled)
    values = replica_settings(load_settings({"ray_address": "local", "user_data_dir": "rel/dir"}, {}))
    assert "ray_address" not in values and values["user_data_dir"].startswith("/")


def test_autoscaling_delays_default_to_serves_and_flags_set_them(tmp_path):
    pytest.importorskip("ray")
    from ray.serve.config import AutoscalingConfig

    from homeport.cli import build_parser
    from homeport.cluster.launch import deployment_options

    base = {"ray_address": "local", "min_replicas": 1, "max_replicas": 2, "user_data_dir": tmp_path}
    auto = deployment_options(load_settings(base, {}))["autoscaling_config"]
    serve = AutoscalingConfig()
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (serve.upscale_delay_s, serve.downscale_delay_s)
    args = build_parser().parse_args(["serve", "--ray-address", "local", "--min-replicas", "1", "--max-replicas", "2",
                                      "--autoscale-upscale-delay", "0", "--autoscale-downscale-delay", "5"])
    assert (args.autoscale_upscale_delay, args.autoscale_downscale_delay) == (0.0, 5.0)
    auto = deployment_options(load_settings({**base, "autoscale_upscale_delay": 0, "autoscale_downscale_delay": 5},
                                            {}))["autoscaling_config"]
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (0.0, 5.0)
    AutoscalingConfig(**auto)  # Serve takes every key
    with pytest.raises(SettingsError, match="autoscale_downscale_delay"):
        load_settings({**base, "autoscale_downscale_delay": -1}, {})


def test_the_driver_places_an_ingress_on_every_other_node_and_retries_a_failed_one(monkeypatch, caplog):
    """NodeIngresses' rounds against a fake Ray: the driver's node is skipped, a node whose port
    is taken is retried after a pause, a node that joins later gets one, one that dies is replaced
    later, and closing drains then kills them."""
    ray = pytest.importorskip("ray")
    from homeport.cluster import node_ingress
    from homeport.errors import StartupError

    class Actor:
        def __init__(self, node: str, answers: list) -> None:
            self.node, self.answers, self.killed, self.drained = node, answers, False, False
            # each ready() call: the next answer, the last one again and again
            self.ready = SimpleNamespace(remote=lambda: answers.pop(0) if len(answers) > 1 else answers[0])
            self.drain = SimpleNamespace(remote=lambda: setattr(self, "drained", True))

    def get(answer):
        if isinstance(answer, Exception):
            raise answer
        return answer

    taken = ray.exceptions.RayTaskError("ready", "traceback", StartupError("cannot listen on 10.0.0.2:5000: in use"))
    n1, n2, n3 = "1" * 56, "2" * 56, "3" * 56  # Ray's node ids: 28 bytes in hex
    serving = {node: [f"http://10.0.0.{node[0]}:5000/v1"] for node in (n2, n3)}
    dead = ray.exceptions.RayActorError()
    plans = {n2: [[taken], [None, serving[n2]]], n3: [[serving[n3], dead], [serving[n3]]]}
    created: list[Actor] = []

    class ActorClass:
        def options(self, **kw):
            assert kw["num_cpus"] == 0 and kw["scheduling_strategy"].soft is False and "lifetime" not in kw
            node = kw["scheduling_strategy"].node_id
            assert kw["name"] == f"homeport-ingress-{node[:12]}"

            def remote(address, hosts, port, options):
                assert hosts == [address] and port == 5000
                created.append(Actor(node, list(plans[node].pop(0))))
                return created[-1]

            return SimpleNamespace(remote=remote)

    nodes = [{"NodeID": n1, "NodeManagerAddress": "10.0.0.1", "Alive": True},
             {"NodeID": n2, "NodeManagerAddress": "10.0.0.2", "Alive": True}]
    clock = [0.0]
    monkeypatch.setattr(node_ingress, "_actor_class", ActorClass)
    monkeypatch.setattr(node_ingress, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(ray, "wait", lambda refs, **kw: (refs, []))
    monkeypatch.setattr(ray, "get", get)
    monkeypatch.setattr(ray, "kill", lambda actor: setattr(actor, "killed", True))
    ingresses = node_ingress.NodeIngresses(("10.0.0.1",), 5000, {})
    ingresses._own_node = n1
    with caplog.at_level("INFO", logger="homeport"):
        ingresses._round()  # n2: placed, its port taken: killed, retried in 60 s
        assert [a.node for a in created] == [n2] and created[0].killed and not ingresses.entries
        assert "no ingress on node 10.0.0.2: cannot listen on 10.0.0.2:5000: in use; retrying in 60 s" in caplog.text
        clock[0] = 30.0
        nodes.append({"NodeID": n3, "NodeManagerAddress": "10.0.0.3", "Alive": True})
        ingresses._round()  # n3 joined: placed and serving; n2 still waits
        assert [a.node for a in created] == [n2, n3]
        assert "ingress on node 10.0.0.3: http://10.0.0.3:5000/v1" in caplog.text
        clock[0] = 61.0
        ingresses._round()  # n2 again: still starting (None); n3's actor died: dropped
        assert created[1].killed and "no ingress on node 10.0.0.3: RayActorError; retrying in 60 s" in caplog.text
        ingresses._round()
        assert "ingress on node 10.0.0.2: http://10.0.0.2:5000/v1" in caplog.text
        clock[0] = 122.0
        ingresses._round()  # n3 replaced
        assert [a.node for a in created] == [n2, n3, n2, n3] and sorted(ingresses.entries) == [n2, n3]
    ingresses.close(1.0)
    assert all(a.drained and a.killed for a in created[2:]) and not ingresses.entries
