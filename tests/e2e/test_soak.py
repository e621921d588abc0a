"""The soak, short: every fault kind once under steady traffic, on its own devcluster (about 4 minutes).

``bench/soak.py`` runs the same code for 30 minutes (docs/reliability.md, "Soak"). Here the load is
3 minutes with one round of the seven faults (Redis restarted and blackholed, a runtime pod deleted,
the operator SIGKILLed, etcd and the API server restarted, a preset changed by kubectl apply), and the
test asserts what the issue asks for (with 30 % of the data operations over the pods' Redis
protocol, the rest over HTTP): no error returned to a client (the client retries another pod
on a connection failure, as any client of a replicated service does), no wrong answer judged by the
load generator's ledger in any phase (the preset-change phase included: the engine's live Redis
reconfiguration used to lose writes and coherence messages, see docs/engine.md, "Live config
changes"), the operator converged again after every fault (a generous bound: no timing
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
    # Both front ends were under the faults: every data operation also went over the Redis protocol.
    assert all(requests["by_op"].get(f"resp {op}", 0) > 0 for op in ("get", "mget", "put", "delete")), shown
    ledger = result["ledger"]
    assert ledger["reads_by_verdict"].get("ok", 0) >= 1000, shown  # reads of real values were judged
    assert ledger["coherent_ops"] >= 500, shown

    for row in result["rss"]:
        if row["lived_s"] >= 60 and row["start_mib"]:
            assert row["end_mib"] <= RSS_RATIO_BOUND * row["start_mib"], shown

    # No wrong answer in any phase. The preset-change phase used to be reported as XFAIL (the soak's
    # finding 1, fixed in the engine: pool and timeout changes are applied to the live clients, a
    # client swap drains calls in flight and voids L1 once the new subscription is up).
    wrong_by_kind = {row["phase"]: row["wrong"] for row in result["by_kind"] if row["wrong"]}
    assert not wrong_by_kind, shown
    assert ledger["wrong_answers"] == 0, shown
