"""What several `cs-relay` commands share on their command line: a whole number of at
least 1 (`positive`), each destination's mock port (`--{option}-port`), and the running
worker to ask (`--url`, `--json`, and the admin token from the environment)."""

from __future__ import annotations

import argparse

from streams.destinations import REGISTRY
from streams.settings import Settings


def mock_port_options(parser: argparse.ArgumentParser) -> None:
    """`--{option}-port` for each registered destination's mock."""
    for p in REGISTRY:
        parser.add_argument(
            f"--{p.mock.option}-port",
            type=int,
            default=p.mock.port,
            dest=f"port_{p.key}",
            help=f"the {p.name} mock's port (default {p.mock.port})",
        )


def mock_ports(args: argparse.Namespace) -> dict[str, int]:
    return {p.key: getattr(args, f"port_{p.key}") for p in REGISTRY}


def worker_http_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the worker (default http://CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT)")
    parser.add_argument("--json", action="store_true", help="compact JSON on one line, for scripts")


def worker_http(args: argparse.Namespace) -> tuple[str, str]:
    from streams.ops.webserve import client_url

    settings = Settings.from_env()
    return args.url or client_url(settings.web_host, settings.web_port), settings.admin_token.reveal()


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number
