"""Values the benchmark stores: AI-response-shaped JSON built from real English prose.

Random bytes would make compression look useless and a repeated string would make it look magical;
real responses are natural-language text with the repetition natural language has. The prose here is
the standard library's own docstrings (extracted with `ast`, never imported), which is real English
technical writing, the same kind of text an assistant returns, and deterministic for a Python version.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any

# Modules whose docstrings make up the corpus; any that are missing are skipped.
_CORPUS_MODULES = (
    "asyncio/events.py", "asyncio/tasks.py", "asyncio/streams.py", "collections/__init__.py",
    "json/__init__.py", "json/decoder.py", "logging/__init__.py", "argparse.py", "typing.py",
    "subprocess.py", "threading.py", "pathlib.py", "inspect.py", "dataclasses.py", "functools.py",
    "unittest/case.py", "email/message.py", "http/client.py", "urllib/request.py", "tarfile.py",
    "zipfile.py", "shutil.py", "socket.py", "ssl.py", "datetime.py", "decimal.py", "fractions.py",
    "statistics.py", "random.py", "difflib.py", "textwrap.py", "pdb.py", "pickle.py", "configparser.py",
)  # fmt: skip


@lru_cache(maxsize=1)
def prose_corpus() -> str:
    """Concatenated docstrings of a fixed set of stdlib modules (a few hundred KiB of English)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    for relative in _CORPUS_MODULES:
        path = stdlib / relative
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    parts.append(doc)
    corpus = "\n\n".join(parts)
    if len(corpus) < 64 * 1024:
        raise RuntimeError(f"stdlib prose corpus too small ({len(corpus)} chars) under {stdlib}")
    return corpus


def _text_slice(length: int, seed: int) -> str:
    """`length` characters of prose starting at a seed-dependent offset (wrapping around)."""
    corpus = prose_corpus()
    start = (seed * 7919) % len(corpus)
    out: list[str] = []
    remaining = length
    while remaining > 0:
        chunk = corpus[start : start + remaining]
        out.append(chunk)
        remaining -= len(chunk)
        start = 0
    return "".join(out)


def ai_response(text_chars: int, seed: int) -> dict[str, Any]:
    """A chat-completion-like response whose assistant message holds `text_chars` chars of prose."""
    content = _text_slice(text_chars, seed)
    return {
        "id": "chatcmpl-" + hashlib.sha256(str(seed).encode()).hexdigest()[:24],
        "object": "chat.completion",
        "model": "bench-model-2025-01",
        "created": 1_735_689_600 + seed,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 512 + seed % 97, "completion_tokens": text_chars // 4},
    }


def large_ai_document(target_bytes: int, seed: int) -> dict[str, Any]:
    """A ~target_bytes JSON document: a summary plus sections and key points, like a long AI answer.

    Structured rather than one giant string, so the encoder sees many keys and strings as it would
    for a real summarise/key-points response.
    """
    sections: list[dict[str, Any]] = []
    size = 0
    index = 0
    while size < target_bytes:
        body = _text_slice(2000 + (index * 37) % 1500, seed * 1009 + index)
        points = [_text_slice(120, seed * 31 + index * 7 + p) for p in range(4)]
        section = {"heading": f"Section {index + 1}", "body": body, "key_points": points, "score": index % 5}
        sections.append(section)
        size += len(body) + sum(len(p) for p in points) + 80
        index += 1
    return {
        "operation": "summarize",
        "model": "bench-model-2025-01",
        "seed": seed,
        "summary": _text_slice(800, seed),
        "sections": sections,
    }
