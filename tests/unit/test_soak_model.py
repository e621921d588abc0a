"""The soak's pure parts (bench/_soak_model.py): schedule, ledger verdicts, phase accounting."""

from __future__ import annotations

import itertools
import json

import pytest

from bench._soak_model import (
    FAULT_KINDS,
    Ledger,
    PhaseBook,
    build_schedule,
    checksum,
    format_table,
    make_value,
    percentile,
    rss_rows,
    value_read_back,
)

# --- schedule -------------------------------------------------------------------------------------


def test_schedule_has_every_kind_within_bounds_and_is_seeded() -> None:
    schedule = build_schedule(240, seed=7, warmup_s=20, cooldown_s=20, slot_s=25)
    assert len(schedule) == 8  # 200 s of faults / 25 s slots
    assert set(FAULT_KINDS) <= {f.kind for f in schedule}
    times = [f.at_s for f in schedule]
    assert times == sorted(times)
    assert times[0] >= 20 and times[-1] <= 240 - 20
    assert [f.index for f in schedule] == list(range(8))
    # Each fault sits in the first half of its own slot: time to recover before the next.
    slot = 200 / 8
    for f in schedule:
        assert 20 + f.index * slot <= f.at_s <= 20 + f.index * slot + slot / 2 + 1e-6
    assert build_schedule(240, seed=7, warmup_s=20, cooldown_s=20, slot_s=25) == schedule
    assert build_schedule(240, seed=8, warmup_s=20, cooldown_s=20, slot_s=25) != schedule


def test_schedule_rounds_and_no_kind_twice_in_a_row() -> None:
    schedule = build_schedule(1800, seed=3)
    kinds = [f.kind for f in schedule]
    assert len(kinds) == ((1800 - 40) // 25)
    for start in range(0, len(kinds) - len(FAULT_KINDS) + 1, len(FAULT_KINDS)):
        assert sorted(kinds[start : start + len(FAULT_KINDS)]) == sorted(FAULT_KINDS)
    assert all(a != b for a, b in itertools.pairwise(kinds))


def test_schedule_too_short_names_the_time_needed() -> None:
    with pytest.raises(ValueError, match=r"load time 100s is not accepted.*at least 215s"):
        build_schedule(100, seed=1, warmup_s=20, cooldown_s=20, slot_s=25)
    with pytest.raises(ValueError, match="kinds"):
        build_schedule(1000, seed=1, kinds=["meteor-strike"])


# --- ledger ---------------------------------------------------------------------------------------


def test_value_binds_key_and_sequence() -> None:
    value = make_value("g1-k2", 5, pad=3)
    assert value == {"key": "g1-k2", "seq": 5, "sum": checksum("g1-k2", 5), "pad": "xxx"}
    assert checksum("g1-k2", 5) != checksum("g1-k2", 6) != checksum("g1-k3", 5)


def test_a_value_set_over_the_redis_protocol_reads_back_through_either_protocol() -> None:
    value = make_value("g1-k2", 5, pad=3)
    text = json.dumps(value, separators=(",", ":"))
    assert value_read_back(text.encode()) == value  # RESP GET of a bytes value: the bytes
    assert value_read_back(text, "utf-8") == value  # HTTP GET of a bytes value: text + its encoding
    assert value_read_back(value) == value  # a JSON value through HTTP: as it is
    assert value_read_back(None) is None and value_read_back(None, None) is None  # a miss


def test_what_does_not_parse_reaches_the_judge_as_it_came() -> None:
    ledger = Ledger(1.0)
    seq = ledger.begin_write("a")
    ledger.acknowledge("a", seq, 1.0, 1.1)
    # A JSON string value through HTTP is never parsed, even when it looks like JSON.
    looks_like_json = json.dumps(make_value("a", seq))
    assert value_read_back(looks_like_json) == looks_like_json
    assert ledger.check_read("a", 5.0, value_read_back(looks_like_json)).kind == "phantom"
    # Bytes that are not JSON (or not UTF-8), and base64 text, stay as they are: phantoms.
    for raw, encoding in ((b"\xff\xfe", None), (b"not json", None), ("bm90IGpzb24=", "base64")):
        read = value_read_back(raw, encoding)
        assert read == raw
        assert ledger.check_read("a", 5.0, read).kind == "phantom"
    assert ledger.wrong_total == 4


def test_fresh_value_miss_and_in_flight_write_are_fine() -> None:
    ledger = Ledger(1.0)
    seq = ledger.begin_write("a")
    # In flight: the value may already be visible.
    assert ledger.check_read("a", 10.0, make_value("a", seq)).kind == "ok"
    ledger.acknowledge("a", seq, 10.0, 10.1)
    assert ledger.check_read("a", 20.0, make_value("a", seq)).kind == "ok"
    assert ledger.check_read("a", 20.0, None).kind == "miss"
    assert ledger.wrong_total == 0


def test_foreign_and_phantom_values_are_wrong() -> None:
    ledger = Ledger(1.0)
    seq = ledger.begin_write("a")
    ledger.acknowledge("a", seq, 1.0, 1.1)
    other = ledger.begin_write("b")
    assert ledger.check_read("a", 5.0, make_value("b", other)).kind == "foreign"
    forged = make_value("a", seq)
    forged["sum"] = "0" * 16
    assert ledger.check_read("a", 5.0, forged).kind == "phantom"
    assert ledger.check_read("a", 5.0, make_value("a", 99)).kind == "phantom"  # never written
    delete_seq = ledger.begin_delete("a")
    assert ledger.check_read("a", 5.0, make_value("a", delete_seq)).kind == "phantom"  # deletes store nothing
    assert ledger.check_read("a", 5.0, "plain text").kind == "phantom"
    assert ledger.wrong_total == 5
    assert ledger.summary()["wrong_answers"] == 5


def test_stale_only_after_the_coherence_bound() -> None:
    ledger = Ledger(1.0)
    first = ledger.begin_write("a")
    ledger.acknowledge("a", first, 0.0, 0.1)
    second = ledger.begin_write("a")
    ledger.acknowledge("a", second, 1.0, 2.0)
    old = make_value("a", first)
    # Started before the second write was acknowledged, or within the bound after: allowed.
    assert ledger.check_read("a", 1.5, old).kind == "ok"
    assert ledger.check_read("a", 2.9, old).kind == "ok"
    assert ledger.summary()["max_superseded_read_lag_s"] == pytest.approx(0.9)
    # Started later than ack + bound: wrong.
    verdict = ledger.check_read("a", 3.1, old)
    assert verdict.kind == "stale" and verdict.wrong and verdict.floor == second
    assert "acknowledged 1.100s before" in verdict.detail


def test_delete_makes_older_values_stale_but_not_a_miss() -> None:
    ledger = Ledger(0.5)
    seq = ledger.begin_write("a")
    ledger.acknowledge("a", seq, 0.0, 0.1)
    gone = ledger.begin_delete("a")
    ledger.acknowledge("a", gone, 1.0, 1.1)
    assert ledger.check_read("a", 2.0, None).kind == "miss"
    assert ledger.check_read("a", 2.0, make_value("a", seq)).kind == "stale"
    again = ledger.begin_write("a")
    ledger.acknowledge("a", again, 3.0, 3.1)
    assert ledger.check_read("a", 4.0, make_value("a", again)).kind == "ok"


def test_operations_in_a_redis_window_are_degraded_not_wrong() -> None:
    ledger = Ledger(1.0)
    first = ledger.begin_write("a")
    ledger.acknowledge("a", first, 0.0, 0.1)
    ledger.open_window(10.0)
    second = ledger.begin_write("a")
    ledger.acknowledge("a", second, 11.0, 11.2)  # reached one pod's L1 only
    old = make_value("a", first)
    verdict = ledger.check_read("a", 13.0, old)  # inside the window
    assert verdict.kind == "degraded-stale" and not verdict.wrong
    ledger.close_window(20.0)
    assert ledger.check_read("a", 30.0, old).kind == "degraded-stale"  # lost, seen after recovery
    summary = ledger.summary()
    assert summary["degraded_stale_inside_redis_windows"] == 1
    assert summary["degraded_stale_after_redis_windows"] == 1
    assert summary["degraded_ops"] == 1 and summary["coherent_ops"] == 1
    assert ledger.wrong_total == 0
    # An operation that only started before the window opened but ended inside is degraded too.
    third = ledger.begin_write("a")
    ledger.open_window(40.0)
    ledger.acknowledge("a", third, 39.9, 40.2)
    assert ledger.summary()["degraded_ops"] == 2
    ledger.close_window(45.0)
    # After the windows, a coherent write sets the floor again: older is wrong.
    fourth = ledger.begin_write("a")
    ledger.acknowledge("a", fourth, 50.0, 50.1)
    assert ledger.check_read("a", 52.0, make_value("a", third)).kind == "stale"


def test_coherent_floor_holds_inside_a_window() -> None:
    ledger = Ledger(1.0)
    first = ledger.begin_write("a")
    ledger.acknowledge("a", first, 0.0, 0.1)
    second = ledger.begin_write("a")
    ledger.acknowledge("a", second, 1.0, 1.1)
    ledger.open_window(5.0)
    # Redis being down does not excuse a value older than what every pod had already acknowledged.
    assert ledger.check_read("a", 6.0, make_value("a", first)).kind == "stale"


def test_failed_operation_raises_no_floor_but_its_value_is_not_phantom() -> None:
    ledger = Ledger(1.0)
    first = ledger.begin_write("a")
    ledger.acknowledge("a", first, 0.0, 0.1)
    lost = ledger.begin_write("a")
    ledger.acknowledge("a", lost, 1.0, None)
    assert ledger.check_read("a", 5.0, make_value("a", lost)).kind == "ok"
    assert ledger.check_read("a", 5.0, make_value("a", first)).kind == "ok"
    assert ledger.summary()["unacknowledged_ops"] == 1


def test_bound_is_validated() -> None:
    with pytest.raises(ValueError, match="coherence bound -1"):
        Ledger(-1)


# --- phases ---------------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 99) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_phase_book_accounts_by_start_time_and_merges_kinds() -> None:
    book = PhaseBook(0.0)
    book.record(1.0, 0.010, True)
    book.begin("pod-delete#0", 10.0)
    book.record(9.9, 0.500, True)  # started in the baseline, finished later
    book.record(11.0, 0.020, True, retried=True)
    book.record(12.0, 0.0, False)
    book.note_degraded_stale(12.5)
    book.begin("redis-restart#1", 20.0)
    book.record(21.0, 0.030, True)
    book.note_wrong(21.5)
    book.begin("pod-delete#2", 30.0)
    book.record(31.0, 0.040, True)
    book.finish(40.0)
    table = {row["phase"]: row for row in book.table()}
    assert table["baseline"]["requests"] == 2 and table["baseline"]["max_ms"] == 500.0
    assert table["pod-delete#0"] == {
        "phase": "pod-delete#0",
        "seconds": 10.0,
        "requests": 2,
        "errors": 1,
        "retried": 1,
        "p50_ms": 20.0,
        "p99_ms": 20.0,
        "max_ms": 20.0,
        "degraded_stale": 1,
        "wrong": 0,
    }
    kinds = {row["phase"]: row for row in book.by_kind()}
    assert kinds["pod-delete"]["requests"] == 3 and kinds["pod-delete"]["seconds"] == 20.0
    assert kinds["pod-delete"]["p99_ms"] == 40.0
    assert kinds["pod-delete"]["degraded_stale"] == 1 and kinds["baseline"]["degraded_stale"] == 0
    assert kinds["redis-restart"]["wrong"] == 1 and kinds["pod-delete"]["wrong"] == 0
    assert set(kinds) == {"baseline", "pod-delete", "redis-restart"}


def test_rss_rows_warm_start_for_processes_started_during_the_run() -> None:
    rows = rss_rows(
        {
            "operator (pid 1)": [(0.0, 60.0), (10.0, 62.0), (20.0, 66.0)],
            "operator (pid 2)": [(30.0, 20.0), (40.0, 70.0), (50.0, 74.0), (60.0, 75.0)],
            "pod (pid 3)": [(95.0, 10.0)],
            "gone": [],
        }
    )
    by_name = {row["process"]: row for row in rows}
    assert by_name["operator (pid 1)"] == {
        "process": "operator (pid 1)",
        "start_mib": 60.0,
        "end_mib": 66.0,
        "peak_mib": 66.0,
        "growth_mib": 6.0,
        "ratio": 1.1,
        "lived_s": 20.0,
    }
    # Started during the run: the first sample 20 s after it was first seen is its start.
    assert by_name["operator (pid 2)"]["start_mib"] == 74.0
    assert by_name["operator (pid 2)"]["lived_s"] == 10.0
    assert by_name["operator (pid 2)"]["peak_mib"] == 75.0
    assert by_name["pod (pid 3)"]["lived_s"] == 0.0
    assert "gone" not in by_name


def test_format_table() -> None:
    text = format_table(
        [{"process": "a", "ratio": None, "start_mib": 1.0}], ["process", "start_mib", "ratio"]
    )
    assert text.splitlines()[0].split() == ["process", "start_mib", "ratio"]
    assert text.splitlines()[1].split() == ["a", "1.0", "-"]


def test_a_wrong_answer_names_the_answering_pod_and_the_keys_last_operations() -> None:
    """A stale read is traceable: which pod answered, and which pods took the key's writes when."""
    ledger = Ledger(coherence_bound_s=1.0)
    ledger.origin = 100.0
    first = ledger.begin_write("a")
    ledger.acknowledge("a", first, 101.0, 101.1, pod="10.0.0.1", note="(degraded: Redis did not take it)")
    second = ledger.begin_write("a")
    ledger.acknowledge("a", second, 102.0, 102.1, pod="10.0.0.2")
    verdict = ledger.check_read("a", 110.0, make_value("a", first), pod="10.0.0.1")
    assert verdict.kind == "stale" and verdict.pod == "10.0.0.1"
    assert verdict.history == [
        "seq 1 write on 10.0.0.1 sent 1.000 acked 1.100 (degraded: Redis did not take it)",
        "seq 2 write on 10.0.0.2 sent 2.000 acked 2.100",
    ]
    assert ledger.check_read("a", 110.0, make_value("a", second), pod="10.0.0.3").history == []
