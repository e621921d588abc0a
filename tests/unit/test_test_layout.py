"""The test tree itself: pytest's default import mode puts each test directory on ``sys.path`` and
imports a test module by its basename, so two test files with the same name in different directories
stop the collection of the whole suite ("import file mismatch"). Catch that here, with both paths."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    """Every ``test_*.py`` under tests/ has a basename no other test module has."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in sorted(TESTS.rglob("test_*.py")):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test modules sharing a basename (rename one of each): {clashes}"
