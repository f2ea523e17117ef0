"""`sentinel-sidecar inject`: its flags, the injection template they name, and the admission
server until a stop signal."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from sentinel_sidecar import signals
from sentinel_sidecar.config import ConfigError, PodEnv

DEFAULT_PORT = 8443


def add_parser(commands: Any) -> None:
    """The `inject` subcommand and its flags."""
    parser = commands.add_parser(
        "inject",
        help="serve the admission webhook that adds the agent to pods that opt in",
        description="An HTTPS admission webhook (admission.k8s.io/v1): pods that opt in "
        '(annotation sentinel.sparecores.com/inject: "true", or a namespace the webhook\'s '
        "selector opted in) get the agent, as the chart's template file describes it "
        "(README 'Automatic injection').",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"[{DEFAULT_PORT}]")
    parser.add_argument("--tls-cert", type=Path, required=True, metavar="FILE",
                        help="serving certificate (PEM; read again when it changes)")  # fmt: skip
    parser.add_argument("--tls-key", type=Path, required=True, metavar="FILE",
                        help="its private key (PEM)")  # fmt: skip
    parser.add_argument("--template", type=Path, required=True, metavar="FILE",
                        help="what to add: the agent's container per mode and its volumes "
                        "(YAML, rendered by the chart)")  # fmt: skip
    parser.add_argument("--namespace", default=None,
                        help="its own namespace, never injected [POD_NAMESPACE]")  # fmt: skip
    parser.add_argument("--max-concurrency", type=int, default=8, help="requests at once [8]")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))  # fmt: skip


def inject(args: argparse.Namespace, environ: dict[str, str], stop: signals.StopFlag) -> int:
    """Serve until a stop signal; ConfigError (exit 2) for bad flags or files."""
    import structlog

    from sentinel_sidecar import log
    from sentinel_sidecar.inject.patch import decide
    from sentinel_sidecar.inject.server import AdmissionServer, Limits, TlsFiles
    from sentinel_sidecar.inject.template import load_template

    if not 0 < args.port < 65536:
        raise ConfigError(f"inject --port: {args.port} is not a port (1-65535)")
    if args.max_concurrency < 1:
        raise ConfigError(f"inject --max-concurrency: {args.max_concurrency} is not >= 1")
    template = load_template(args.template)
    own = args.namespace or PodEnv.from_environ(environ).namespace or ""
    tls = TlsFiles(args.tls_cert, args.tls_key)
    try:
        tls.context()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"inject --tls-cert/--tls-key: {exc}") from exc
    log.configure(args.log_level)

    def decide_one(pod: dict[str, Any], namespace: str, namespace_opted_in: bool) -> Any:
        return decide(pod, namespace, template, namespace_opted_in=namespace_opted_in,
                      own_namespace=own)  # fmt: skip

    try:
        server = AdmissionServer(args.port, tls, decide_one, Limits(args.max_concurrency))
    except OSError as exc:
        raise ConfigError(f"inject --port: {args.port}: {exc.strerror}") from exc
    threading.Thread(target=server.serve_forever, name="inject", daemon=True).start()
    structlog.get_logger(__name__).info("inject_listening", port=server.server_address[1],
                                        own_namespace=own)  # fmt: skip
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    return 0
