"""Where a worker's time goes: py-spy's folded stacks as tottime / cumulative tables.

`python -m bench --scenarios b --profile` runs `py-spy record --format raw` attached to
the worker of each relay while it drains scenario b's backlog (see `bench.suite`), and
writes the folded stacks (`frame;frame;... count` per line; speedscope opens them too)
to `var/bench/<stamp>/b-*/profile-*.txt`. This module reads them:

* **self** (cProfile's tottime): the samples whose innermost frame is the function;
* **cumulative**: the samples with the function anywhere on the stack (once per sample,
  however often it recurses), leaving out the plumbing every sample passes through
  (the event loop's run functions, click, Faust's CLI, runpy: `PLUMBING`);
* **callers** of the top self entries: which function called them, by samples.

py-spy records only samples where Python code is on the CPU (idle waits are left out
unless it is given `--idle`), so the shares are of the worker's busy time.

    python -m bench.profile var/bench/<stamp>/b-cs-relay/profile-b-cs-relay.txt [--top 15]
    python -m bench.profile bench/results/profiles/<stamp>-b-cs-relay.txt.gz   # gzipped, as kept
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")  # "func (path/file.py:123)" -> "func (path/file.py)"
_SITE = re.compile(r"/(?:site|dist)-packages/")


def frame_name(frame: str) -> str:
    """A py-spy frame without its line number, and with the path from the package on
    (site-packages and the checkout's absolute prefix cut)."""
    frame = _LINE.sub(")", frame.strip())
    name, sep, path = frame.partition(" (")
    if not sep:
        return frame
    path = path.rstrip(")")
    match = _SITE.search(path)
    if match:
        path = path[match.end() :]
    else:
        for root in ("/streams/", "/bench/", "/lib/python3"):
            at = path.find(root)
            if at >= 0:
                path = path[at + 1 :]
                break
    return f"{name} ({path})"


def read_folded(text: str) -> list[tuple[list[str], int]]:
    """Folded stacks (`a;b;c 12` per line, outermost frame first) as (frames, count)."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in stack.split(";") if f], int(count)))
    return stacks


PLUMBING = (
    "(asyncio/base_events.py)",
    "Handle._run (asyncio/events.py)",
    "(click/",
    "(faust/cli/",
    "(mode/worker.py)",
    "(<frozen runpy>)",
    "(streams/cli/",
    "(bench/naive.py)",  # its main(); the agent is a closure of create_app, named relay
    "App.main (faust/app/base.py)",
)


def _plumbing(name: str) -> bool:
    return any(mark in name for mark in PLUMBING) and not name.startswith("create_app.<locals>")


def top(stacks: Sequence[tuple[Sequence[str], int]], n: int = 15, callers_of: int = 5) -> dict[str, Any]:
    """The `n` functions with the most self samples and with the most cumulative
    samples (plumbing left out), each as [function, samples, share of all samples];
    and for the first `callers_of` self entries, their callers."""
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    called_by: dict[str, Counter[str]] = {}
    for frames, count in stacks:
        if not frames:
            continue
        own[frames[-1]] += count
        called_by.setdefault(frames[-1], Counter())[frames[-2] if len(frames) > 1 else "(none)"] += count
        for name in set(frames):
            if not _plumbing(name):
                cumulative[name] += count

    def table(counter: Mapping[str, int]) -> list[list[Any]]:
        ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:n]
        return [[name, count, round(count / total, 4) if total else 0.0] for name, count in ranked]

    result = {"samples": total, "self": table(own), "cumulative": table(cumulative)}
    result["callers"] = {name: table(called_by[name])[:4] for name, _, _ in result["self"][:callers_of]}
    return result


def by_area(stacks: Sequence[tuple[Sequence[str], int]], areas: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Share of samples whose innermost frame's path contains one of an area's
    markers (first area that matches wins; the rest is "other")."""
    total = sum(count for _, count in stacks) or 1
    shares: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = frames[-1] if frames else ""
        area = next((name for name, marks in areas.items() if any(m in leaf for m in marks)), "other")
        shares[area] += count
    return {name: round(count / total, 4) for name, count in shares.most_common()}


AREAS: dict[str, tuple[str, ...]] = {
    "json": ("json/", "orjson", "(json", "json/decoder", "json/encoder"),
    "rocksdb / tables": ("rocksdict", "faust/stores", "faust/tables"),
    "faust streams / topics": ("faust/", "mode/"),
    "kafka client": ("aiokafka/", "kafka/"),
    "aiohttp / yarl / multidict": ("aiohttp/", "yarl/", "multidict/"),
    "asyncio": ("asyncio/",),
    "cs-relay": ("streams/",),
}


def render(result: Mapping[str, Any]) -> str:
    lines = [f"{result['samples']:,} samples"]
    for key, title in (("self", "self (tottime)"), ("cumulative", "cumulative")):
        lines.append(f"\n{title}:")
        lines += [f"  {share:6.1%}  {count:7,}  {name}" for name, count, share in result[key]]
    for name, rows in result.get("callers", {}).items():
        lines.append(f"\ncallers of {name}:")
        lines += [f"  {share:6.1%}  {count:7,}  {caller}" for caller, count, share in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("folded", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    raw = args.folded.read_bytes()
    stacks = read_folded((gzip.decompress(raw) if args.folded.suffix == ".gz" else raw).decode())
    print(render(top(stacks, args.top)))
    print("\nby area (innermost frame):")
    for area, share in by_area(stacks, AREAS).items():
        print(f"  {share:6.1%}  {area}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
