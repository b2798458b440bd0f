"""Write docs/fields.md: every output field of every command, generated from perfmodel/schema.py.

    python docs/make_fields.py           # rewrite docs/fields.md
    python docs/make_fields.py --check   # exit 1 when docs/fields.md is out of date
"""
from __future__ import annotations

import sys
from pathlib import Path

from perfmodel.files import write_atomic
from perfmodel.schema import markdown

TARGET = Path(__file__).resolve().parent / "fields.md"


def main(argv: list[str]) -> int:
    text = markdown()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python docs/make_fields.py", file=sys.stderr)
            return 1
        return 0
    write_atomic(TARGET, text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
