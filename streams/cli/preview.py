"""`cs-relay preview FILE|-`: what cs-relay would do with Segment messages now, per
destination: the request it would send (method, URL, headers with credentials masked,
JSON body), or that it would hold, skip or refuse the call, and why.

The messages go through the worker's own pure step (`streams.core.preview`), in order,
each seeing the state the ones before it left. `--offline` starts from empty state with
this shell's settings; otherwise a running worker previews them against its tables and
its settings (`POST /preview/{userId}`, with the admin token). Nothing is sent and
nothing is written. Exit 0 when no message would be held or refused (each is sent, or
counted in an aggregation window, wherever it is meant to go; a destination's rule may
skip it), 1 otherwise, 2 when the input or the worker cannot be read.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TextIO

from streams.core.preview import preview
from streams.core.previewtext import PreviewInputError, heading, outcome_line, read_messages, summary
from streams.destinations import REGISTRY
from streams.envreader import EnvReader
from streams.settings import Settings

MAX_INPUT_BYTES = 8 * 1024 * 1024


def offline(raws: Sequence[bytes], settings: Settings, out: TextIO) -> list[dict[str, Any]]:
    """The previews against empty state, with these settings (or every destination's demo
    settings when none is enabled here, saying so)."""
    from streams.runtime.wiring import destinations, memories, request_view

    if not any(settings.destinations[p.key].enabled for p in REGISTRY):
        print(
            "(no destination is enabled in this shell's settings: every destination is shown with its "
            "mock's demo credentials)",
            file=out,
        )
        demo = {
            p.key: p.read_settings(EnvReader(p.mock.worker_env(f"http://127.0.0.1:{p.mock.port}", {})))
            for p in REGISTRY
        }
        settings = replace(settings, destinations=demo)
    results = preview(
        raws,
        destinations(settings),
        now=time.time(),
        max_pending=settings.pending_max_events,
        max_pending_age=settings.pending_max_age_seconds,
        memories=memories(),
    )
    render = request_view(settings)
    return [r.to_dict(render) for r in results]


def show(results: Sequence[Mapping[str, Any]], out: TextIO) -> int:
    """Print each message's outcomes; the exit code (0: every message delivered)."""
    for result in results:
        print(f"\n{heading(result)}", file=out)
        if "invalid" in result:
            print(f"   refused at intake (dead-lettered): {result['invalid']}", file=out)
            continue
        outcomes = result["outcomes"]
        width = max((len(o["destination"]) for o in outcomes), default=0)
        if not outcomes:
            print("   no destination is enabled", file=out)
        for o in outcomes:
            print(f"   {o['destination']:<{width}}  {outcome_line(o)}", file=out)
            request = o.get("request")
            if request:
                pad = " " * (width + 5)
                for name, value in request.get("headers", {}).items():
                    if name != "Content-Type":
                        print(f"{pad}{name}: {value}", file=out)
                print(f"{pad}{json.dumps(request['json'], ensure_ascii=False, sort_keys=True)}", file=out)
    print(f"\n{summary(results)}", file=out)
    return 0 if results and all(r["delivered"] for r in results) else 1


def run(path: str, *, use_worker: bool, url: str, token: str, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        text = sys.stdin.read(MAX_INPUT_BYTES) if path == "-" else _read(path)
        raws = read_messages(text)
    except (OSError, UnicodeDecodeError, PreviewInputError) as exc:
        print(f"cs-relay preview: {path}: {exc}", file=sys.stderr)
        return 2
    if use_worker:
        from streams.cli.previewclient import WorkerUnavailable, from_worker

        try:
            results = from_worker(raws, url, token)
        except WorkerUnavailable as exc:
            print(f"cs-relay preview: {exc}", file=sys.stderr)
            return 2
    else:
        results = offline(raws, Settings.from_env(), out if not as_json else sys.stderr)
    if as_json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False, sort_keys=True), file=out)
        return 0 if results and all(r["delivered"] for r in results) else 1
    return show(results, out)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        text = handle.read(MAX_INPUT_BYTES + 1)
    if len(text) > MAX_INPUT_BYTES:
        raise PreviewInputError(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    return text
