"""The bench's report: the machine it ran on, and scenario a's figures and every
scenario's headline as text."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import aggregation, scenarios, stats


def machine_info(kafka: str) -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
        memory_kb = stats.proc_status_kb(Path("/proc/meminfo").read_text()).get("MemTotal", 0)
    except OSError:
        memory_kb = 0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(memory_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka,
        "faust-streaming": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
        "aiohttp": version("aiohttp"),
        "rocksdict": version("rocksdict"),
    }


def report(results: dict[str, Any]) -> str:
    """Scenario a's figures (when it ran), then every scenario's headline and target."""
    lines = [report_a(results)] if "cs_relay" in results else []
    if "aggregation" in results:
        lines += aggregation.report_lines(results["aggregation"])
    lines += ["scenarios (ratios of figures measured in this run):"]
    lines += scenarios.summary_lines(results.get("scenarios", {}))
    return "\n".join(lines)


def report_a(results: dict[str, Any]) -> str:
    relay, base, ratios = results["cs_relay"], results["baselines"], results["ratios"]
    burst, paced = relay["burst"], relay["paced"]
    lines = [
        f"cs-relay, {results['mix']['users']:,} users, {results['settings']['events']:,} + "
        f"{results['settings']['paced_events']:,} events, {results['machine']['cpus']} CPUs, "
        f"Kafka {results['machine']['kafka']}",
        f"  throughput     {burst['events_per_second']:,.0f} events/s delivered "
        f"({burst['requests_per_second']:,.0f} partner requests/s) over {burst['window_s']:.1f} s, "
        f"worker at {burst['worker_cpu_cores']:.2f} cores",
        f"  vs intake      {ratios['throughput_vs_raw_consumer']:.1%} of a bare consumer "
        f"({base['raw_consumer']['events_per_second']:,} events/s)",
        f"  vs delivery    {ratios['throughput_vs_plain_http']:.1%} of a bare HTTP client "
        f"({base['plain_http']['requests_per_second']:,} requests/s, "
        f"{base['plain_http']['concurrency_per_partner']} in flight per partner)",
    ]
    if paced.get("latency_ms"):
        latency = paced["latency_ms"]
        lines.append(
            f"  latency        p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms produce → partner "
            f"(paced at {paced['rate']:.0f} events/s, {latency['count']:,} requests)"
        )
    lines += [
        f"  memory         worker peak RSS {relay['worker_peak_rss_mb']:.0f} MB",
        f"  state on disk  {relay['state_data_bytes'] / 2**20:.1f} MB of table data for {results['mix']['users']:,} "
        f"users = {relay['state_data_mb_per_100k_users']:.0f} MB per 100,000 users "
        f"(+ {relay['state_rocksdb_overhead_bytes'] / 2**20:.1f} MB of RocksDB logs and options)",
        f"  dead letters   {relay['dead_letters']}; requests not 2xx: "
        f"{burst['requests_not_2xx'] + paced.get('requests_not_2xx', 0)}",
    ]
    return "\n".join(lines)


def summary_a(results: dict[str, Any]) -> dict[str, Any]:
    """Scenario a (bench.scenario_a.Bench) in the shape of the others: its ratios and headline."""
    burst, paced, ratios = results["cs_relay"]["burst"], results["cs_relay"]["paced"], results["ratios"]
    base = results["baselines"]
    p99 = (paced.get("latency_ms") or {}).get("p99", float("nan"))
    return {
        "complete": burst["complete"] and paced["complete"],
        "ratios": {
            "cs_relay_vs_plain_http": ratios["throughput_vs_plain_http"],
            "cs_relay_vs_raw_consumer": ratios["throughput_vs_raw_consumer"],
        },
        "p99_latency_ms": p99,
        "paced_rate": paced.get("rate"),
        "headline": f"cs-relay {burst['events_per_second']:,.0f} calls/s ({burst['requests_per_second']:,.0f} "
        f"requests/s) = {scenarios.percent(ratios['throughput_vs_plain_http'])} of the bare aiohttp client "
        f"({base['plain_http']['requests_per_second']:,} requests/s); p99 latency {p99:.0f} ms at "
        f"{paced.get('rate') or 0:.0f} calls/s (the cores' speed {scenarios.speed(paced.get('machine_speed'))})",
    }
