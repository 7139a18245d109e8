"""The worker's garbage collector policy (streams/gcpolicy.py), in a fresh interpreter
so that this test process keeps CPython's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams import gcpolicy

PROBE = """
import gc, json
from streams import gcpolicy
alive = [[n] for n in range(1000)]  # what start-up made
before = gc.get_freeze_count()
gcpolicy.settle()
young = [[n] for n in range(10)]
print(json.dumps({
    "before": before,
    "frozen": gc.get_freeze_count(),
    "threshold": gc.get_threshold(),
    "alive_in_a_generation": any(o is alive[0] for g in range(3) for o in gc.get_objects(g)),
    "young_in_a_generation": any(o is young[0] for g in range(3) for o in gc.get_objects(g)),
    "enabled": gc.isenabled(),
}))
"""


def test_settle_freezes_what_is_alive_and_collects_the_young_less_often():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout)
    assert seen["before"] == 0
    assert seen["frozen"] >= 1000  # start-up's objects, the 1,000 dicts among them
    assert seen["alive_in_a_generation"] is False  # frozen: no collection walks them
    assert seen["young_in_a_generation"] is True  # what comes after is collected as usual
    assert seen["threshold"][0] == gcpolicy.GEN0 != 700
    assert seen["enabled"] is True


def test_settle_refuses_a_threshold_below_one():
    with pytest.raises(ValueError, match="gen0"):
        gcpolicy.settle(0)
