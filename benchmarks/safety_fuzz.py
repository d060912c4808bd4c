"""Issue 16's counts: run the bad-input table (tests/safety_cases.py) against a source tree and count
each outcome: clean refusal / traceback or raw exception / silently accepted / hang / data lost.

    timeout 3600 python3 benchmarks/safety_fuzz.py --tree /tmp/old   # e.g. a worktree of an old commit
    timeout 3600 python3 benchmarks/safety_fuzz.py --tree .

A worker process imports the tree's iclebm once (cwd and PYTHONPATH = the tree) and forks one child
per case, which runs `iclebm.cli.main(argv)` as `python -m iclebm` would (an uncaught exception prints
its traceback and exits 1), or an API snippet, under an 8 GB address-space limit and a CPU-time limit
(a case over it is a hang: CPU time, not wall time, so a busy machine does not fake hangs). A CLI case
is clean when it exits non-zero without a traceback; an API case when it raises ValueError or an
iclebm error. Data lost: a file that existed before the case (the tree's checkpoints/ or the fresh
scratch files) changed or vanished; the tree's checkpoints/ are restored with git afterwards. The
fixtures are written by the iclebm next to this script."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

MEMORY_LIMIT = 8 * 2**30
TYPED = ("ValueError", "CheckpointError", "TaskFamilyError", "CapabilityError", "ContextTooLongError",
         "UnknownObjectiveError", "IclebmError", "TrainingDivergedError")


def _run_child(case: dict, out_path: str, cpu_s: int) -> None:
    """In the forked child: limits, output to a file, the case; never returns."""
    import traceback

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    rc = 0
    try:
        if case["kind"] == "cli":
            import iclebm.cli

            sys.argv = ["python -m iclebm", *case["argv"]]
            rc = iclebm.cli.main(case["argv"])
        else:
            exec(case["code"], {"__name__": "__main__"})
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        rc = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(int(rc) & 0xFF)


def worker(cpu_s: int, wall_s: float) -> None:
    """Read cases (JSON lines) on stdin, fork each, answer {rc, output} (rc null: a hang)."""
    import iclebm.cli  # noqa: F401  (imported once; every child inherits it)

    for line in sys.stdin:
        case = json.loads(line)
        out_path = tempfile.mktemp(prefix="fuzz-out-")
        pid = os.fork()
        if pid == 0:
            _run_child(case, out_path, cpu_s)
        t0 = time.time()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() - t0 > wall_s:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        rc = os.waitstatus_to_exitcode(status)
        hung = rc in (-signal.SIGXCPU, -signal.SIGKILL)
        output = Path(out_path).read_text(errors="replace") if Path(out_path).exists() else ""
        Path(out_path).unlink(missing_ok=True)
        print(json.dumps({"rc": None if hung else rc, "output": output[-6000:]}), flush=True)


def digest(folders: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


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
    ap.add_argument("--tree", type=Path, help="the source tree to test (a git checkout)")
    ap.add_argument("--cpu", type=int, default=60, help="CPU seconds per case before it counts as a hang")
    ap.add_argument("--wall", type=float, default=900.0, help="wall-clock backstop per case (seconds)")
    ap.add_argument("--json", type=Path, default=None, help="also write every case's outcome here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.cpu, args.wall)
        return 0
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent / "tests"), str(here.parent)]
    from safety_cases import API_CASES, CLI_CASES, fill, make_fixtures

    tree = args.tree.resolve()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--cpu", str(args.cpu), "--wall",
           str(args.wall)]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rows = []
    cases = [(n, a, False) for n, a in CLI_CASES] + [(n, c, True) for n, c in API_CASES]
    for name, spec, api in cases:
        scratch = Path(tempfile.mkdtemp(prefix="fuzz-"))
        values = make_fixtures(scratch)
        watched = [tree / "checkpoints", scratch]
        before = digest(watched)
        case = {"kind": "api", "code": spec} if api else {"kind": "cli", "argv": fill(spec, values)}
        proc.stdin.write(json.dumps(case) + "\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        rc, output = answer["rc"], answer["output"]
        after = digest(watched)
        lost = any(after.get(k) != v for k, v in before.items())
        outcome = classify(rc, output, api, lost)
        rows.append({"case": name, "api": api, "rc": rc, "outcome": outcome,
                     "last_line": (output.strip().splitlines() or [""])[-1][:200]})
        print(f"{outcome:18s} rc={rc!s:5s} {name}", flush=True)
        if lost:
            restore(tree)
        shutil.rmtree(scratch, ignore_errors=True)
    proc.stdin.close()
    proc.wait()
    counts = Counter(r["outcome"] for r in rows)
    order = ("clean", "traceback", "silently accepted", "hang", "data lost")
    print(f"tree {tree}: tried {len(rows)}; " + ", ".join(f"{k} {counts.get(k, 0)}" for k in order))
    if args.json:
        args.json.write_text(json.dumps({"tree": str(tree), "counts": dict(counts), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
