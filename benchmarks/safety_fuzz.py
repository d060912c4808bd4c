"""Issue 16's counts: run the bad-input table (tests/safety_cases.py) against a source tree and count
each outcome: clean refusal / traceback or raw exception / silently accepted / hang / data lost.

    timeout 3600 python3 benchmarks/safety_fuzz.py --tree /tmp/old   # e.g. a worktree of an old commit
    timeout 3600 python3 benchmarks/safety_fuzz.py --tree .

Every case runs in its own process (cwd and PYTHONPATH = the tree, an 8 GB address-space limit, a time
limit), on fresh scratch files. A CLI case is clean when it exits non-zero without a traceback; an API
case when it raises ValueError or an iclebm error. Data lost: a file that existed before the case (the
tree's checkpoints/ or the scratch files) changed or vanished; the tree's checkpoints/ are restored
with git afterwards. The fixtures are written by the iclebm next to this script."""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent)]

from safety_cases import API_CASES, CLI_CASES, fill, make_fixtures  # noqa: E402

MEMORY_LIMIT = 8 * 2**30
TYPED = ("ValueError", "CheckpointError", "TaskFamilyError", "CapabilityError", "ContextTooLongError",
         "UnknownObjectiveError", "IclebmError", "TrainingDivergedError")


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def digest(folders: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def run(cmd: list[str], tree: Path, timeout: float) -> tuple[int | None, str]:
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stdout[-2000:] + p.stderr[-4000:]


def classify(rc: int | None, output: str, api: bool, lost: bool) -> str:
    if lost:
        return "data lost"
    if rc is None:
        return "hang"
    if rc == 0:
        return "silently accepted"
    if api:
        last = output.strip().splitlines()[-1] if output.strip() else ""
        name = last.split(":", 1)[0].rsplit(".", 1)[-1]
        return "clean" if name in TYPED else "traceback"
    return "traceback" if "Traceback" in output or "frame #" in output else "clean"


def restore(tree: Path) -> None:
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", "--", "checkpoints"], check=False)
    subprocess.run(["git", "-C", str(tree), "clean", "-fdq", "checkpoints"], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, required=True, help="the source tree to test (a git checkout)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--json", type=Path, default=None, help="also write every case's outcome here")
    args = ap.parse_args()
    tree = args.tree.resolve()
    rows = []
    cases = [(n, a, False) for n, a in CLI_CASES] + [(n, c, True) for n, c in API_CASES]
    for name, spec, api in cases:
        scratch = Path(tempfile.mkdtemp(prefix="fuzz-"))
        values = make_fixtures(scratch)
        watched = [tree / "checkpoints", scratch]
        before = digest(watched)
        cmd = [sys.executable, "-c", spec] if api else [sys.executable, "-m", "iclebm", *fill(spec, values)]
        rc, output = run(cmd, tree, args.timeout)
        after = digest(watched)
        lost = any(after.get(k) != v for k, v in before.items())
        outcome = classify(rc, output, api, lost)
        rows.append({"case": name, "api": api, "rc": rc, "outcome": outcome,
                     "last_line": (output.strip().splitlines() or [""])[-1][:200]})
        print(f"{outcome:18s} rc={rc!s:5s} {name}", flush=True)
        if lost:
            restore(tree)
        shutil.rmtree(scratch, ignore_errors=True)
    counts = Counter(r["outcome"] for r in rows)
    order = ("clean", "traceback", "silently accepted", "hang", "data lost")
    print(f"tree {tree}: tried {len(rows)}; " + ", ".join(f"{k} {counts.get(k, 0)}" for k in order))
    if args.json:
        args.json.write_text(json.dumps({"tree": str(tree), "counts": dict(counts), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
