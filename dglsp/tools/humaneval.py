"""HumanEval-Infilling problems and the sandbox that executes a completion against their tests.

A problem is the code before the gap (`prompt`), the code after it (`suffix`), the canonical middle and the
upstream tests. `check_completion` runs prompt + completion + suffix + tests + `check(entry_point)` as the
upstream harness does, but for real: `python -I` in a fresh temporary directory, with a timeout and limits on
memory, file size and CPU time that hold even if the parent dies. `dglsp eval` scores infilling with it and
`dglsp bench --draft` scores whole function bodies.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dglsp.tools.corpus import HUMAN_EVAL_DIR

BENCHMARKS = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
MEMORY_LIMIT_BYTES = 1 << 30
OUTPUT_LIMIT_BYTES = 10 << 20


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # code before the gap
    suffix: str  # code after the gap
    canonical_solution: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str  # "passed" | "failed" | "timeout"
    detail: str = ""


def load_problems(benchmark: str, data_dir: Path = HUMAN_EVAL_DIR, limit: int = 0) -> list[Problem]:
    """Problems of one benchmark; with `limit`, evenly spaced across it (so every HumanEval task can appear)."""
    path = data_dir / BENCHMARKS[benchmark]
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [Problem(**json.loads(line)) for line in handle]
    if limit and limit < len(problems):
        stride = len(problems) / limit
        problems = [problems[int(i * stride)] for i in range(limit)]
    return problems


def program_for(problem: Problem, completion: str) -> str:
    """The upstream harness's program (prompt + completion + suffix + test + check call), run for real here."""
    return (problem.prompt + completion + problem.suffix + "\n" + problem.test + "\n"
            + f"check({problem.entry_point})\n")


def _limit_resources(timeout_s: float) -> None:
    # Runs in the child before exec: a runaway completion can neither eat the machine's memory,
    # fill its disk, nor spin past the timeout even if the parent dies.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
    cpu = int(timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(source: str, timeout_s: float = 10.0) -> ExecutionResult:
    """Execute `source` with `python -I` in a fresh temporary directory, a timeout and resource limits."""
    with tempfile.TemporaryDirectory(prefix="dglsp-eval-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(source, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        process = subprocess.Popen(
            [sys.executable, "-I", str(script)], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: _limit_resources(timeout_s),
        )
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the whole session: the program may have forked
            process.communicate()
            return ExecutionResult(False, "timeout")
    if process.returncode == 0:
        return ExecutionResult(True, "passed")
    return ExecutionResult(False, "failed", stderr.decode("utf-8", "replace")[-500:])


def check_completion(problem: Problem, completion: str, timeout_s: float = 10.0) -> ExecutionResult:
    return run_program(program_for(problem, completion), timeout_s)


def is_exact(completion: str, problem: Problem) -> bool:
    def normal(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    return normal(completion) == normal(problem.canonical_solution)
