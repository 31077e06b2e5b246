"""Rewrite the settings block of docs/settings.md from dglsp/config.py's defaults (tests/test_config.py checks them)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from dglsp.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def main() -> None:
    defaults = dataclasses.asdict(Settings())
    defaults.pop("remote")  # documented in its own table
    text = DOC.read_text()
    block = re.search(r"(sections that mirror `dglsp/config.py`:\n\n```json\n)(.*?)(\n```)", text, re.S)
    assert block, "docs/settings.md lost its settings block"
    DOC.write_text(text[:block.start(2)] + json.dumps(defaults, indent=2) + text[block.end(2):])


if __name__ == "__main__":
    main()
