"""The soak, short: every fault kind once under steady traffic, on its own devcluster (about 4 minutes).

``bench/soak.py`` runs the same code for 30 minutes (docs/reliability.md, "Soak"). Here the load is
3 minutes with one round of the seven faults (Redis restarted and blackholed, a runtime pod deleted,
the operator SIGKILLed, etcd and the API server restarted, a preset changed by kubectl apply), and the
test asserts what the issue asks for: no error returned to a client (the client retries another pod
on a connection failure, as any client of a replicated service does), no wrong answer judged by the
load generator's ledger (except the one known engine defect below, reported as XFAIL, never as a
pass), the operator converged again after every fault (a generous bound: no timing
is asserted), and bounded memory growth. Reads that saw a write acknowledged *while Redis was
unreachable* being lost are the documented degradation (counted apart, printed, not failed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._soak_model import FAULT_KINDS
from bench.soak import Soak, SoakOptions, render_report
from devcluster.testing import binaries_or_skip

LOAD_MINUTES = 3.0
RATE = 80.0
# Generous: a process whose memory doubles in three minutes has a leak, noise does not do that.
RSS_RATIO_BOUND = 2.0
# Found by this soak (docs/reliability.md, "Soak", finding 1): a preset change changes the Redis
# settings, the runtime rebuilds its Redis clients and coherence subscription, and writes or
# invalidation messages in flight during that swap are lost: another pod keeps serving the older
# value until the key is written again. Owned by the engine; reproduce with
# `bench/soak.py --minutes 3 --slot 10 --faults preset-change`.
KNOWN_BUG_PHASE = "preset-change"
KNOWN_BUG = "live Redis reconfiguration (apply_config) loses coherence for writes in flight (engine defect)"


@pytest.mark.timeout(1200)
def test_soak_every_fault_once(tmp_path: Path) -> None:
    """3 runtime pods, steady traffic, one round of every fault: 0 client errors, 0 wrong answers,
    every fault converged, bounded RSS."""
    binaries_or_skip()
    options = SoakOptions(
        minutes=LOAD_MINUTES,
        seed=20261125,
        rate=RATE,
        warmup_s=15.0,
        cooldown_s=10.0,
        slot_s=22.0,
        blackhole_s=7.0,  # longer than the subscription's ping + timeout (6 s): the drop path runs
        converge_timeout_s=180.0,
        work_dir=tmp_path / "work",
        json_path=tmp_path / "soak.json",
    )
    result = Soak(options, say=print).run()
    report = render_report(result)
    shown = report + "\n" + json.dumps(result["faults"], indent=1)

    kinds = [f["kind"] for f in result["faults"]]
    assert sorted(kinds) == sorted(FAULT_KINDS), shown
    not_converged = [f for f in result["faults"] if not f["converged"]]
    assert not not_converged, shown

    requests = result["requests"]
    assert requests["errors"] == 0, shown
    # Steady traffic really flowed: at least half of what was offered was served.
    assert requests["served"] >= 0.5 * RATE * result["load_seconds"], shown
    ledger = result["ledger"]
    assert ledger["reads_by_verdict"].get("ok", 0) >= 1000, shown  # reads of real values were judged
    assert ledger["coherent_ops"] >= 500, shown

    for row in result["rss"]:
        if row["lived_s"] >= 60 and row["start_mib"]:
            assert row["end_mib"] <= RSS_RATIO_BOUND * row["start_mib"], shown

    wrong_by_kind = {row["phase"]: row["wrong"] for row in result["by_kind"]}
    known = wrong_by_kind.pop(KNOWN_BUG_PHASE, 0)
    assert sum(wrong_by_kind.values()) == 0, shown
    assert ledger["wrong_answers"] == known, shown
    if known:
        # Every other assertion held; the only wrong answers are the known engine defect. XFAIL, not a
        # pass, so CI shows it until the engine is fixed (then this branch never runs).
        pytest.xfail(f"{known} stale reads after a live preset change: {KNOWN_BUG}")
