"""The `homeport` command line: parse flags, build Settings, check TLS files, start the server.

Flag names follow the reference API. Every failure the user can cause ends as one line,
`homeport: error: <what>`, on stderr: exit status 2 for a bad flag, 1 for any other start-up problem.
"""

from __future__ import annotations

import argparse
import importlib
import os
import ssl
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from homeport import __version__
from homeport.cmd_flags import CmdFlagsError, cmd_flags_file, read_cmd_flags
from homeport.errors import StartupError
from homeport.schemas.chat import ToolPrompt
from homeport.settings import Settings, load_settings

_COMMANDS = ("serve",)
# Arguments that belong to the top-level parser; anything else implies `serve`.
_TOP_LEVEL = ("-h", "--help", "--version")


class _UsageError(Exception):
    """A flag argparse rejected; carries argparse's one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block and exit; we want one line and a return code.
        raise _UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    args = _with_default_command(list(sys.argv[1:] if argv is None else argv))
    try:
        file_args: list[str] = []
        if args[0] == "serve":
            flags_file = cmd_flags_file(args[1:])
            try:
                file_args = read_cmd_flags(flags_file)
            except StartupError as exc:
                return _fail(str(exc), 2 if isinstance(exc, CmdFlagsError) else 1)
            args = ["serve", *file_args, *args[1:]]  # the real command line comes last and wins
        try:
            namespace = build_parser().parse_args(args)
        except _UsageError as exc:
            return _fail(f"{exc} (flags from {flags_file} included)" if file_args else str(exc), 2)
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else 0
        return _serve(namespace)
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="homeport",
        description="An offline OpenAI-compatible server.",
        epilog="With no command, `serve` is assumed (`homeport --api-port 5001`); "
        "`homeport serve --help` lists its flags.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the API server (the default command)", allow_abbrev=False
    )
    _add_serve_flags(serve)
    return parser


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    # Every default stays None so that only flags the user gave reach load_settings and override
    # the settings file; the real defaults live on Settings.
    net = parser.add_argument_group("network")
    net.add_argument("--api-port", type=int, metavar="PORT", help="port to listen on (default 5000; 0 = any free port)")
    net.add_argument(
        "--listen",
        action=argparse.BooleanOptionalAction,
        help="listen on all interfaces (0.0.0.0) instead of 127.0.0.1",
    )
    net.add_argument("--listen-host", metavar="HOST", help="address to bind; overrides --listen")
    net.add_argument("--api-enable-ipv6", action="store_true", default=None, help="also listen on IPv6 ([::1], or [::] with --listen)")
    net.add_argument("--api-disable-ipv4", action="store_true", default=None, help="do not listen on IPv4")
    net.add_argument(
        "--public-api", action="store_true", default=None,
        help="open a Cloudflare tunnel with a local cloudflared executable and print its public URL",
    )
    net.add_argument("--public-api-id", metavar="NAME", help="a named Cloudflare tunnel instead of a quick one")
    net.add_argument("--cloudflared", type=Path, metavar="PATH", help="the cloudflared executable (default: found on PATH)")
    net.add_argument(
        "--shutdown-timeout", type=float, metavar="S",
        help="on SIGTERM/Ctrl-C, seconds running generations get to finish (default 30)",
    )
    net.add_argument("--api-key", metavar="KEY", help="require `Authorization: Bearer KEY`")
    net.add_argument("--admin-key", metavar="KEY", help="key for model management (default: --api-key)")
    net.add_argument("--ssl-keyfile", type=Path, metavar="FILE", help="TLS private key (PEM)")
    net.add_argument("--ssl-certfile", type=Path, metavar="FILE", help="TLS certificate (PEM)")
    net.add_argument(
        "--metrics", action=argparse.BooleanOptionalAction,
        help="Prometheus metrics at /metrics (default on; --no-metrics turns them off)",
    )
    net.add_argument("--metrics-public", action=argparse.BooleanOptionalAction,
                     help="serve /metrics without the API key (default: the key is needed when one is set)")
    net.add_argument(
        "--cors-origins",
        type=_comma_list,
        metavar="ORIGINS",
        help="comma-separated allowed CORS origins (default *)",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="NAME", help="GGUF file path or name under --model-dir")
    model.add_argument("--model-dir", type=Path, metavar="DIR", help="where models live")
    model.add_argument("--user-data-dir", type=Path, metavar="DIR", help="user data (default user_data)")
    model.add_argument("--state-db", type=Path, metavar="FILE", help="stored Responses, SQLite (default <user-data-dir>/homeport.db)")
    _add_load_arg_flags(model)
    model.add_argument("--max-loaded-models", type=int, metavar="N", help="models loaded at once (default 2: both packaged models fit)")
    model.add_argument("--idle-timeout", type=float, metavar="MIN", help="unload a model idle this many minutes (0 = never)")
    model.add_argument(
        "--model-alias", action="append", metavar="NAME=MODEL", dest="model_aliases",
        help="serve MODEL when a request names NAME (repeatable), e.g. gpt-4o-mini=gemma-3-270m-q4_k_m",
    )
    model.add_argument("--max-queue", type=int, metavar="N", help="requests waiting for a slot before 503 (default 256)")
    model.add_argument(
        "--tool-prompt", choices=typing.get_args(ToolPrompt), metavar="auto|template|generic",
        help="who shows a request's tools to the model: its chat template, homeport's own tool prompt, "
        "or the template where it can and homeport otherwise (default auto)",
    )
    model.add_argument(
        "--strict-model-names", action=argparse.BooleanOptionalAction,
        help="an unknown model name is a 404 (default: the default model answers, as the reference API does)",
    )
    model.add_argument(
        "--allow-remote-media", action=argparse.BooleanOptionalAction,
        help="fetch http(s) image URLs in requests (off by default: nothing is fetched)",
    )
    model.add_argument(
        "--remote-media-allow-private", action=argparse.BooleanOptionalAction,
        help="with --allow-remote-media, also fetch from loopback, private and link-local addresses",
    )

    extra = parser.add_argument_group("embeddings and moderations")
    extra.add_argument("--embedding-model", metavar="NAME", help="a path or a name under --model-dir (default all-MiniLM-L6-v2)")
    extra.add_argument("--embedding-device", metavar="DEVICE", help="cpu | cuda | auto (default cpu)")
    extra.add_argument(
        "--rerank-model", metavar="PATH_OR_NAME",
        help="a cross-encoder folder (path or name under --model-dir) for /v1/rerank; default: embedding similarity",
    )
    extra.add_argument("--moderation-threshold", type=float, metavar="X", help="score above which a category is flagged (0.5)")

    images = parser.add_argument_group("images")
    images.add_argument("--image-model", metavar="NAME",
                        help="a diffusers folder (path or name under --model-dir) for /v1/images, loaded at start")

    speech = parser.add_argument_group("speech")
    speech.add_argument("--stt-model", metavar="PATH_OR_NAME",
                        help="speech-to-text model: a CTranslate2 Whisper folder (default: the bundled Whisper base)")
    speech.add_argument("--tts-model", metavar="NAME", help="text-to-speech model (default: hibari's bundled voices)")
    speech.add_argument("--voice-map", action="append", metavar="NAME=VOICE", dest="voice_map",
                        help="speak voice NAME (e.g. alloy) with bundled VOICE (repeatable)")

    cluster = parser.add_argument_group("cluster (Ray Serve; docs/cluster.md)")
    cluster.add_argument("--ray-address", metavar="ADDR",
                         help="serve through the Ray cluster whose head is at HOST:PORT (`local`: a private one-node cluster)")
    cluster.add_argument("--replicas", type=int, metavar="N", help="model replicas on the cluster (default 1)")
    cluster.add_argument("--min-replicas", type=int, metavar="N", help="autoscale: at least N replicas")
    cluster.add_argument("--max-replicas", type=int, metavar="N", help="autoscale: at most N replicas")
    cluster.add_argument("--target-ongoing-requests", type=float, metavar="X",
                         help="autoscale: requests per replica to aim for (default 2)")
    up, down = (Settings.model_fields[f"autoscale_{kind}_delay"].default for kind in ("upscale", "downscale"))
    cluster.add_argument("--autoscale-upscale-delay", type=float, metavar="S",
                         help=f"autoscale: seconds above the target before Serve adds a replica (default {up:g})")
    cluster.add_argument("--autoscale-downscale-delay", type=float, metavar="S",
                         help=f"autoscale: seconds below the target before Serve removes one (default {down:g})")
    cluster.add_argument("--replica-cpus", type=float, metavar="X", help="CPUs Ray reserves per replica (default 1)")
    cluster.add_argument("--ingress-only", action="store_true", default=None,
                         help="one more ingress (e.g. on another node) for the replicas an earlier "
                              "`homeport serve --ray-address` deployed; deploys and removes nothing")
    cluster.add_argument("--node-ingress", action=argparse.BooleanOptionalAction,
                         help="also serve the API at --api-port on every other node of the cluster, placed by Ray "
                              "(default on; --no-node-ingress: only here)")

    compat = parser.add_argument_group("reference API compatibility")
    # The reference needs --api (and an extension) to start its API; homeport's API is always on.
    compat.add_argument("--api", action="store_true", default=None, dest="_api", help="accepted: the API is always on")
    compat.add_argument("--extensions", nargs="+", metavar="NAME", dest="_extensions", help="accepted: openai is built in")
    compat.add_argument("--nowebui", action="store_true", default=None, help="no chat page at /")

    other = parser.add_argument_group("other")
    other.add_argument("--settings", type=Path, metavar="FILE", help="settings YAML file")
    other.add_argument(
        "--debug", action=argparse.BooleanOptionalAction, help="log prompts and parameters"
    )


def _add_load_arg_flags(group: argparse._ArgumentGroup) -> None:
    """The start-up flags of the backends' load arguments, from their declarations (one per knob:
    `homeport.registry.LoadArg`), each setting the Settings field of the same knob."""
    from homeport.registry import backends

    seen: set[str] = set()
    for backend in backends():
        for arg in backend.load_args:
            flag = arg.flag
            if flag is None or arg.setting in seen:
                continue
            seen.add(arg.setting)
            if flag.switch:
                group.add_argument(*flag.names, dest=arg.setting, action=argparse.BooleanOptionalAction, help=flag.help)
            else:
                group.add_argument(*flag.names, dest=arg.setting, type=arg.type, metavar=flag.metavar,
                                   choices=flag.choices, help=flag.help)


def check_tls_files(settings: Settings) -> None:
    """Fail at start-up, naming the file, rather than on the first HTTPS handshake."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None or key is None:
        return
    for label, path in (("certificate", cert), ("key", key)):
        if not path.exists():
            raise StartupError(f"TLS {label} file not found: {path}")
        if not path.is_file():
            raise StartupError(f"TLS {label} file is not a file: {path}")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise StartupError(f"TLS {label} file {path} is not readable: {exc.strerror}") from None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: _encrypted_key(key))
    except ssl.SSLError as exc:
        raise StartupError(_tls_problem(cert, key, exc)) from None


def _encrypted_key(key: Path) -> NoReturn:
    # Without a callback OpenSSL would prompt on the terminal and hang a headless start.
    raise StartupError(f"TLS key file {key} is encrypted; homeport needs an unencrypted key")


def _tls_problem(cert: Path, key: Path, exc: ssl.SSLError) -> str:
    # load_cert_chain's errors ("PEM lib") do not say which file is bad; find out.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return f"TLS certificate file {cert} does not hold a PEM certificate"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"TLS key file {key} does not match certificate {cert}"
    if exc.library == "SSL" and "PEM" in str(exc):
        return f"TLS key file {key} does not hold a PEM private key"
    return f"TLS certificate {cert} and key {key} could not be loaded: {exc.reason or exc}"


def _serve(namespace: argparse.Namespace) -> int:
    _warn_ignored_extensions(namespace._extensions or [])
    cli_values = {
        name: value
        for name, value in vars(namespace).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(cli_values, os.environ, namespace.settings)
    except StartupError as exc:
        # A bad value given as a flag is a usage error, like one argparse catches itself.
        return _fail(str(exc), 2 if getattr(exc, "origin", None) == "cli" else 1)
    try:
        check_tls_files(settings)
        # Imported here so --help and flag errors never pay for the server's dependencies.
        server = importlib.import_module("homeport.server")
        status = server.serve(settings)
    except StartupError as exc:
        return _fail(str(exc), 1)
    return status if isinstance(status, int) else 0


def _warn_ignored_extensions(names: list[str]) -> None:
    # Webui users' CMD_FLAGS.txt often lists several extensions; only openai means anything here.
    ignored = [name.strip() for item in names for name in item.split(",") if name.strip() not in ("", "openai")]
    if ignored:
        print(
            f"homeport: warning: ignoring --extensions {' '.join(ignored)}: homeport has no extensions "
            "(the OpenAI API is built in)",
            file=sys.stderr,
        )


def _with_default_command(args: list[str]) -> list[str]:
    if args and (args[0] in _COMMANDS or args[0] in _TOP_LEVEL):
        return args
    return ["serve", *args]


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fail(message: str, status: int) -> int:
    print(f"homeport: error: {' '.join(message.split())}", file=sys.stderr)
    return status

