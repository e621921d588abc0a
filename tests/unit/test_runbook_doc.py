"""docs/runbook.md covers the troubleshooting guide: every method+path pair and every bash block."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.guide_doc import GUIDE, parse_guide

DOC = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"


def test_every_curl_line_and_path_is_in_the_runbook() -> None:
    text = DOC.read_text()
    commands = parse_guide()
    rows = {int(line) for line in re.findall(r"^\| (\d+) \| `curl", text, re.M)}
    assert rows == {command.line for command in commands}
    for command in commands:
        assert "…/" + command.path.removeprefix("/internal/cache/") in text, command.path


def test_every_multi_line_snippet_is_accounted_for() -> None:
    text = DOC.read_text()
    guide = GUIDE.read_text()
    for match in re.finditer(r"```bash\n(.*?)```", guide, re.S):
        if match.group(1).count("curl ") > 1 or "while true" in match.group(1):
            headings = re.findall(r"^#+ (.+)$|^\*\*(.+)\*\*:?$", guide[: match.start()], re.M)
            heading = [a or b for a, b in headings][-1].strip()
            if heading in {"Cache System Status", "Quick Performance Check", "Diagnostic Workflow"}:
                continue  # listed as commands (their curls) and timed in the phases table
            assert heading.split(" (")[0] in text, heading
