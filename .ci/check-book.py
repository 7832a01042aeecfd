#!/usr/bin/env python3
"""Checks the book: every {{#include}} resolves to a file and anchor, and every Rust code
block is an include of compiled code rather than inline text."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
src = root / "book" / "src"
include = re.compile(r"\{\{#(?:include|rustdoc_include)\s+([^}:\s]+)(?::([A-Za-z0-9_\-]+))?\s*\}\}")
fence = re.compile(r"^```+\s*([a-z0-9_,\-]*)")
errors = []
includes = 0

for md in sorted(src.rglob("*.md")):
    text = md.read_text(encoding="utf-8")
    for m in include.finditer(text):
        includes += 1
        target = (md.parent / m.group(1)).resolve()
        where = f"{md.relative_to(root)}: {m.group(0)}"
        if not target.is_file():
            errors.append(f"{where}: no file {target}")
            continue
        anchor = m.group(2)
        if anchor and not anchor.isdigit():
            body = target.read_text(encoding="utf-8")
            if f"ANCHOR: {anchor}" not in body or f"ANCHOR_END: {anchor}" not in body:
                errors.append(f"{where}: anchor `{anchor}` not in {target.relative_to(root)}")
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = fence.match(lines[i])
        if not m:
            i += 1
            continue
        lang = m.group(1)
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang.split(",")[0] == "rust":
            code = [l for l in body if l.strip()]
            if not code or not all(include.fullmatch(l.strip()) for l in code):
                errors.append(
                    f"{md.relative_to(root)}:{start + 1}: a Rust block must only include compiled code"
                )

for e in errors:
    print(e, file=sys.stderr)
print(f"book: {includes} includes checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
