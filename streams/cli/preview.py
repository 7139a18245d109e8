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
from streams.destinations import REGISTRY
from streams.envreader import EnvReader
from streams.settings import Settings

MAX_INPUT_BYTES = 8 * 1024 * 1024


class PreviewInputError(ValueError):
    """The input is not Segment messages as JSON: the message says where."""


def read_messages(text: str) -> list[bytes]:
    """The messages of a file: one JSON object, a JSON array of them, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise PreviewInputError("no message in the input")
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [_encode(whole)]
    if isinstance(whole, list):
        return [_encode(item) for item in whole]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise PreviewInputError(f"line {number}: not JSON ({exc.msg})") from None
            out.append(line.strip().encode("utf-8"))
    return out


def _encode(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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
        where = f"user {result['user']!r}, messageId {result['messageId']!r}" if "user" in result else "not routed"
        print(f"\n{result['index'] + 1}. {result['call']} ({where})", file=out)
        if "invalid" in result:
            print(f"   refused at intake (dead-lettered): {result['invalid']}", file=out)
            continue
        outcomes = result["outcomes"]
        width = max((len(o["destination"]) for o in outcomes), default=0)
        if not outcomes:
            print("   no destination is enabled", file=out)
        for o in outcomes:
            print(f"   {o['destination']:<{width}}  {_line(o)}", file=out)
            request = o.get("request")
            if request:
                pad = " " * (width + 5)
                for name, value in request.get("headers", {}).items():
                    if name != "Content-Type":
                        print(f"{pad}{name}: {value}", file=out)
                print(f"{pad}{json.dumps(request['json'], ensure_ascii=False, sort_keys=True)}", file=out)
    delivered = sum(1 for r in results if r["delivered"])
    print(f"\n{delivered} of {len(results)} message(s) would be delivered (neither held nor refused)", file=out)
    return 0 if results and delivered == len(results) else 1


def _line(outcome: Mapping[str, Any]) -> str:
    verdict, reason, request = outcome["verdict"], outcome.get("reason", ""), outcome.get("request")
    target = f"{request['method']} {request['url']}" if request else ""
    if verdict == "send":
        return f"sent now{f' ({reason})' if reason else ''}: {target}"
    if verdict == "aggregate":
        return f"aggregated ({reason}): {target}"
    if verdict == "release":
        return f"releases held event {outcome.get('messageId')!r}: {target}"
    word = {"hold": "held", "skip": "skipped", "refuse": "refused (dead-lettered)"}[verdict]
    about = f" event {outcome['messageId']!r}" if outcome.get("messageId") else ""
    return f"{word}{about}: {reason}"


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
