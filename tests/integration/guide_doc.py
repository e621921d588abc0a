"""The troubleshooting guide's commands, read from the guide's own text.

Every ``curl`` of every ```bash block becomes a :class:`GuideCommand` (method, path, query, JSON body,
and the ``jq`` filters that read its answer, including those applied later through a shell variable
as in ``BASELINE=$(curl ...); echo $BASELINE | jq '...'``). The tests and docs/runbook.md work from
this list, so nothing about the guide is copied by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

GUIDE = Path("/work/shared/seed/000_f7245299e5920fc4.txt")
_STOP = set("|>);\n")


@dataclass
class GuideCommand:
    """One curl line of the guide."""

    line: int
    method: str
    path: str
    query: dict[str, str]
    body: object | None
    filters: list[str] = field(default_factory=list)
    text: str = ""
    section: str = ""

    @property
    def pair(self) -> tuple[str, str]:
        """(method, path): what the guide's 73 distinct pairs are counted by."""
        return self.method, self.path


def _words(text: str, start: int) -> tuple[list[str], int, str]:
    """Shell words from ``start`` up to an unquoted stop character; returns (words, end, stop)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    has_word = False
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
        elif char in "'\"":
            quote, has_word = char, True
        elif char == "\\" and i + 1 < len(text) and text[i + 1] == "\n":
            i += 1
        elif char in _STOP:
            break
        elif char.isspace():
            if has_word:
                words.append("".join(current))
                current, has_word = [], False
        else:
            current.append(char)
            has_word = True
        i += 1
    if has_word:
        words.append("".join(current))
    return words, i, text[i] if i < len(text) else ""


def _jq_filter(words: list[str]) -> str | None:
    if not words or words[0] != "jq":
        return None
    rest = [word for word in words[1:] if not word.startswith("-")]
    return rest[0] if rest else "."


def parse_guide(text: str | None = None) -> list[GuideCommand]:
    """Every curl command of the guide, in order, with the jq filters applied to its answer."""
    text = GUIDE.read_text() if text is None else text
    commands: list[GuideCommand] = []
    by_variable: dict[str, GuideCommand] = {}
    section = ""
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        body = block.group(1)
        offset = block.start(1)
        heading = re.findall(r"^#+ (.+)$", text[: block.start()], re.M)
        section = heading[-1] if heading else section
        for match in re.finditer(r"(?:(\w+)=\$\()?\bcurl\s", body):
            begin = match.end() - 5
            words, end, stop = _words(body, begin)
            method = "GET"
            url = ""
            payload = None
            k = 1
            while k < len(words):
                word = words[k]
                if word == "-X":
                    method, k = words[k + 1], k + 2
                    continue
                if word in {"-d", "--data"}:
                    payload, k = json.loads(words[k + 1]), k + 2
                    continue
                if word == "-H":
                    k += 2
                    continue
                if word.startswith("http"):
                    url = word
                k += 1
            parts = urlsplit(url)
            line = text.count("\n", 0, offset + match.start()) + 1
            command = GuideCommand(
                line=line,
                method=method,
                path=parts.path,
                query=dict(parse_qsl(parts.query)),
                body=payload,
                text=body[begin:end].strip(),
                section=section,
            )
            if stop == "|":
                jq_words, _, _ = _words(body, end + 1)
                found = _jq_filter(jq_words)
                if found:
                    command.filters.append(found)
            if match.group(1):
                by_variable[match.group(1)] = command
            commands.append(command)
        for echo in re.finditer(r"echo \$(\w+) \| ", body):
            target = by_variable.get(echo.group(1))
            if target is not None:
                jq_words, _, _ = _words(body, echo.end())
                found = _jq_filter(jq_words)
                if found:
                    target.filters.append(found)
    return commands


if __name__ == "__main__":  # pragma: no cover - a look at what the parser reads
    found = parse_guide()
    pairs = sorted({c.pair for c in found})
    for c in found:
        print(c.line, c.method, c.path, c.query, json.dumps(c.body)[:60], [f[:40] for f in c.filters])
    print(len(found), "curl lines,", len(pairs), "distinct pairs")
