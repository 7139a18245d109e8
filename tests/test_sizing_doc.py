"""docs/operations.md's "Sizing" figures are those of the committed results files they
name (bench/results/*.json): each figure is read from its file and must be in the
section as the section writes it, and every file the section links exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
A, F, D = "20261201T003033Z.json", "20261201T010015Z.json", "20261206T161702Z-datadir.json"


def section() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("\n## Sizing\n")
    return text[start : text.index("\n## ", start + 1)]


def results(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / name).read_text())


def test_every_figure_is_its_results_files():
    text = " ".join(section().replace("**", "").split())  # one line, whatever the breaks and bold
    a, f, d = results(A), results(F), results(D)["datadir"]
    burst = a["cs_relay"]["burst"]
    figures = {
        f"{burst['worker_cpu_cores'] / burst['events_per_second'] * 1000:.1f} cores per 1,000 events/s": A,
        f"{a['scenarios']['b']['cs_relay']['cpu_ms_per_event']:.2f} ms of CPU": A,
        f"about {round(burst['events_per_second'], -1):.0f} calls/s": A,
        f"{a['scenarios']['b']['cs_relay']['events_per_second']:.0f} tracks/s": A,
        f"{a['scenarios']['e']['ratios']['two_vs_one']:.2f}x one": A,
        f"peak RSS {a['cs_relay']['worker_peak_rss_mb']:.0f} MB at {a['mix']['users']:,} users": A,
        f"{a['cs_relay']['state_data_mb_per_100k_users']} MB of table data per 100,000 users": A,
        f"{a['cs_relay']['state_rocksdb_overhead_bytes'] / 1e6:.1f} MB of RocksDB's own files": A,
        f"{a['scenarios']['d']['heavy']['state_bytes_per_user']:,} bytes per user who made 1,000 tracks": A,
        f"{a['mix']['mean_message_bytes']} bytes on average": A,
        f"{f['scenarios']['f']['cs_relay']['worker_peak_rss_mb']:.0f} MB at ~880,000": F,
        f"{f['scenarios']['f']['state_bytes_per_user']} bytes of table data per user at ~880,000": F,
        f"{d['data_dir_mb_per_100k_users']} MB of data directory per 100,000 users": D,
        f"{d['restart_to_ready_s']['data_dir_kept']} s with the data directory": D,
        f"{d['restart_to_ready_s']['data_dir_lost']} s without": D,
        f"{d['restore_s']} s to restore {d['changelog_records_total']:,} changelog records": D,
        f"({d['restored_records_per_s']:,} records/s)": D,
        f"about {round(d['restore_s_per_100k_users'], -1):.0f} s per 100,000 users": D,
        f"{d['users']:,} users, a group call and a track each": D,
    }
    missing = [figure for figure in figures if figure not in text]
    assert not missing, f"figures of the results files not in the Sizing section: {missing}"
    for name in set(figures.values()):
        assert f"../bench/results/{name}" in text, f"the section does not name {name}"


def test_every_results_file_the_section_names_exists():
    named = re.findall(r"\.\./bench/results/([\w.-]+\.json)", section())
    assert named and all((ROOT / "bench" / "results" / name).is_file() for name in named)
