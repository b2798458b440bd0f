"""Paste the benchmark scripts' output into README.md, so that every figure there is a script's, never typed.

README.md marks each generated block with a pair of HTML comments naming the script that writes it:

    <!-- generated: python benchmarks/transfer.py --markdown -->
    ... (replaced) ...
    <!-- end generated -->

    python benchmarks/update_readme.py [--only SUBSTRING] [--check]

runs each block's command from the repository root and replaces the block with its standard output. ``--only``
reruns the blocks whose command contains SUBSTRING; ``--check`` lists the blocks and their commands without
running anything.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (?P<cmd>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--only", help="rerun only the blocks whose command contains this")
    ap.add_argument("--check", action="store_true", help="list the generated blocks, run nothing")
    args = ap.parse_args()
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    if args.check:
        for m in blocks:
            print(m.group("cmd"))
        return 0
    out, last = [], 0
    for m in blocks:
        cmd = m.group("cmd")
        out.append(text[last:m.start()])
        if args.only and args.only not in cmd:
            out.append(m.group(0))
        else:
            print(f"running: {cmd}", file=sys.stderr)
            argv = shlex.split(cmd)
            if argv and argv[0] == "python":
                argv[0] = sys.executable
            done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                print(f"update_readme: {cmd!r} exited {done.returncode}; README left unchanged", file=sys.stderr)
                return 1
            out.append(m.group(1) + done.stdout.rstrip("\n") + "\n" + m.group(4))
        last = m.end()
    out.append(text[last:])
    path.write_text("".join(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
