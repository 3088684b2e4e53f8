"""Start-up time of ``precision-lab --help`` and ``import precision_lab.cli``, for two source trees in one run.

    python benchmarks/startup.py --before /path/to/old/tree --runs 15

Each measurement is a fresh interpreter (``python -c``) with ``PYTHONPATH`` set to the tree; runs of the two trees
alternate so that load on the machine hits both alike. Prints the median seconds and the ratio, and which heavy
modules the import loads.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "pandas", "onnxruntime", "polygraphy", "onnx", "numpy")
HELP = "import sys; sys.argv = ['precision-lab', '--help']; from precision_lab.cli import entry_point; entry_point()"
IMPORT = f"import sys, precision_lab.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"


def _seconds(tree: Path, code: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, cwd=tree,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - started, proc.stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the older source tree")
    parser.add_argument("--after", default=str(REPO), help="the newer source tree (default: this one)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    trees = {"before": Path(args.before), "after": Path(args.after)}
    times = {name: {"help": [], "import": []} for name in trees}
    loaded = {}
    for _ in range(args.runs):
        for name, tree in trees.items():
            times[name]["help"].append(_seconds(tree, HELP)[0])
            seconds, modules = _seconds(tree, IMPORT)
            times[name]["import"].append(seconds)
            loaded[name] = modules.splitlines()[-1] if modules else ""
    for what in ("help", "import"):
        before, after = (statistics.median(times[n][what]) for n in trees)
        print(f"{what:>6}: before {before:.3f} s, after {after:.3f} s, ratio {before / after:.2f}x (median of {args.runs})")
    for name in trees:
        print(f"{name}: import precision_lab.cli loads {loaded[name] or 'none of ' + ', '.join(HEAVY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
