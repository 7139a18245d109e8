"""The benchmark's two charts, drawn from a results dict with matplotlib (Agg, no display).

* `<stamp>-throughput.png`: events delivered per second (an event is delivered when
  every partner that takes it has it) and requests per second at each partner, from
  the worker's start; the paced phase is shaded.
* `<stamp>-latency.png`: produce-to-partner-receipt latency of the paced phase, as a
  histogram and as a cumulative distribution with p50 and p99 marked.
* `<stamp>-scenarios.png`: each scenario's ratios (bench.scenarios), as bars, with
  its target (`bench.scenarios.TARGETS`) drawn as a line where it has one.

The first two are scenario a's, drawn when it ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def draw(results: Mapping[str, Any], latencies_ms: Sequence[float], prefix: Path) -> list[Path]:
    """Write both charts next to `prefix` (`<prefix>-throughput.png`, `-latency.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if "series" in results:
        paths.append(_throughput(plt, results, prefix.with_name(prefix.name + "-throughput.png")))
    if latencies_ms and "cs_relay" in results:
        paths.append(_latency(plt, results, latencies_ms, prefix.with_name(prefix.name + "-latency.png")))
    bars = scenario_bars(results.get("scenarios", {}), bool(results.get("settings", {}).get("by_user_hop")))
    if bars:
        paths.append(_scenarios(plt, results, bars, prefix.with_name(prefix.name + "-scenarios.png")))
    return paths


# (scenario, ratio key, label, target or None): what the scenarios chart shows; the
# targets are those of bench.scenarios.TARGETS (b's: keyed in place, HOP_TARGET with
# --by-user-hop).
BARS = (
    ("a", "cs_relay_vs_plain_http", "(a) mix: cs-relay / bare client", None),
    ("b", "cs_relay_vs_plain_http", "(b) tracks: cs-relay / bare client", None),
    ("b", "naive_vs_plain_http", "(b) tracks: naive / bare client", None),
    ("b", "cs_relay_vs_naive", "(b) tracks: cs-relay / naive", 1.0),
    ("b", "cs_relay_vs_naive_uvloop", "(b) tracks: cs-relay / naive on uvloop", None),
    ("c", "cs_relay_share_of_bound", "(c) 50 ms: cs-relay / in-flight bound", 0.80),
    ("c", "plain_http_share_of_bound", "(c) 50 ms: bare client / bound", None),
    ("d", "heavy_vs_light_rate", "(d) heavy / light users rate", 0.90),
    ("e", "two_vs_one", "(e) two workers / one", None),
)


HOP_TARGET = 0.9  # b's cs-relay / naive with --by-user-hop


def scenario_bars(scenarios: Mapping[str, Any], by_user_hop: bool = False) -> list[tuple[str, float, float | None]]:
    """(label, ratio, target) for each ratio of BARS the results hold."""
    bars = []
    for name, key, label, target in BARS:
        if by_user_hop and (name, key) == ("b", "cs_relay_vs_naive"):
            target = HOP_TARGET
        value = scenarios.get(name, {}).get("ratios", {}).get(key)
        if isinstance(value, (int, float)) and value == value:
            bars.append((label, float(value), target))
    return bars


def _scenarios(
    plt: Any, results: Mapping[str, Any], bars: Sequence[tuple[str, float, float | None]], path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(bars) + 1.6), dpi=110)
    labels = [label for label, _, _ in bars]
    values = [value for _, value, _ in bars]
    positions = list(range(len(bars)))[::-1]
    ax.barh(positions, values, color="#1f5fa8", alpha=0.85, height=0.6)
    for y, (_, value, target) in zip(positions, bars, strict=True):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        if target is not None:
            ax.plot([target, target], [y - 0.38, y + 0.38], color="#c0392b", linewidth=2)
    ax.plot([], [], color="#c0392b", linewidth=2, label="target")
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("ratio of figures measured in the same run")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    machine = results["machine"]
    ax.set_title(f"cs-relay benchmark scenarios — {machine['cpus']} CPUs, Kafka {machine['kafka']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _throughput(plt: Any, results: Mapping[str, Any], path: Path) -> Path:
    series = results["series"]
    seconds = list(range(len(series["events_per_second"])))
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    ax.plot(seconds, series["events_per_second"], color="#1f5fa8", linewidth=1.8, label="events delivered / s")
    for partner, color, style in (("clientsuccess", "#d9822b", "-"), ("customersuccessbox", "#3a9a5b", ":")):
        ax.plot(
            seconds,
            series["requests_per_second"][partner],
            color=color,
            linestyle=style,
            linewidth=1.2,
            label=f"{partner} requests / s",
        )
    paced_from = series.get("paced_from_second")
    if paced_from is not None:
        ax.axvspan(paced_from, len(seconds), color="#999999", alpha=0.15, label="paced phase (latency)")
    burst = results["cs_relay"]["burst"]
    ax.axhline(
        burst["events_per_second"],
        color="#1f5fa8",
        linestyle="--",
        linewidth=0.8,
        label=f"backlog average {burst['events_per_second']:.0f} events/s",
    )
    ax.set_xlabel("seconds since the worker started")
    ax.set_ylabel("per second")
    ax.set_title(_title("cs-relay throughput", results))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if series.get("worker_cpu_cores"):
        cpu_ax = ax.twinx()
        times, cores = zip(*series["worker_cpu_cores"], strict=True)
        cpu_ax.plot(times, cores, color="#7f3fbf", linewidth=0.8, alpha=0.7, label="worker CPU (cores)")
        cpu_ax.set_ylabel("worker CPU (cores)")
        cpu_ax.set_ylim(0, max(1.2, max(cores) * 1.1))
        more_handles, more_labels = cpu_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _latency(plt: Any, results: Mapping[str, Any], latencies_ms: Sequence[float], path: Path) -> Path:
    latency = results["cs_relay"]["paced"]["latency_ms"]
    ordered = sorted(latencies_ms)
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    hist.hist(ordered, bins=60, color="#1f5fa8", alpha=0.85)
    hist.set_xlabel("produce → partner receipt (ms)")
    hist.set_ylabel("requests")
    hist.set_title("histogram")
    fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
    cdf.plot(ordered, fractions, color="#1f5fa8", linewidth=1.5)
    for name, color in (("p50", "#3a9a5b"), ("p99", "#c0392b")):
        cdf.axvline(latency[name], color=color, linestyle="--", linewidth=1, label=f"{name} {latency[name]:.0f} ms")
    cdf.set_xscale("log")
    cdf.set_xlabel("produce → partner receipt (ms, log scale)")
    cdf.set_ylabel("share of requests")
    cdf.set_title("cumulative distribution")
    cdf.legend(loc="lower right", fontsize=8)
    for ax in (hist, cdf):
        ax.grid(alpha=0.3)
    fig.suptitle(_title("cs-relay latency, paced phase", results), fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _title(what: str, results: Mapping[str, Any]) -> str:
    machine, settings = results["machine"], results["settings"]
    return (
        f"{what} — {settings['events']:,} backlog + {settings['paced_events']:,} paced calls, "
        f"{settings['users']:,} users, {machine['cpus']} CPUs, Kafka {machine['kafka']}"
    )
