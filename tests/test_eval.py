"""`dglsp eval`: the execution harness really runs the code, and the command runs end to end on a real model."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from dglsp.cli import main as cli_main
from dglsp.tools import eval_humaneval as evaluate
from dglsp.tools import humaneval

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def problem() -> humaneval.Problem:
    return humaneval.load_problems("single-line", limit=1)[0]


def test_known_correct_completion_passes(problem):
    result = humaneval.check_completion(problem, problem.canonical_solution)
    assert result.passed, result.detail


def test_known_wrong_completion_fails(problem):
    indent = problem.canonical_solution[: len(problem.canonical_solution) - len(problem.canonical_solution.lstrip())]
    result = humaneval.check_completion(problem, f"{indent}return not_a_name\n")
    assert not result.passed and result.status == "failed"


def test_an_assertion_failure_is_a_failure():
    assert humaneval.run_program("assert 1 + 1 == 3\n").status == "failed"
    assert humaneval.run_program("assert 1 + 1 == 2\n").passed


def test_infinite_loop_times_out_quickly():
    begin = time.monotonic()
    result = humaneval.run_program("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - begin < 5


def test_memory_is_limited():
    result = humaneval.run_program("x = bytearray(4 << 30)\n", timeout_s=5.0)
    assert result.status == "failed" and "MemoryError" in result.detail


def test_programs_run_in_a_scratch_directory_that_is_removed():
    source = "import os, sys\nassert 'dglsp-eval-' in os.getcwd(), os.getcwd()\nassert sys.flags.isolated\n" \
             "open('scratch.txt', 'w').write(os.getcwd())\n"
    assert humaneval.run_program(source).passed
    assert not Path("scratch.txt").exists()


def test_single_line_postprocessing_keeps_the_first_line(problem):
    assert evaluate.postprocess("    x = 1\n    y = 2\n", problem, single_line=True) == "    x = 1\n"
    assert evaluate.postprocess("    x = 1", problem, single_line=False) == "    x = 1\n"


def test_exact_match_ignores_trailing_whitespace_only(problem):
    assert humaneval.is_exact(problem.canonical_solution.rstrip("\n") + "  \n", problem)
    assert not humaneval.is_exact(problem.canonical_solution.replace("(", "[", 1) + "\n", problem)


def test_limit_spreads_problems_over_the_benchmark():
    problems = humaneval.load_problems("multi-line", limit=4)
    assert len(problems) == 4
    tasks = {p.task_id.split("/")[2] for p in problems}
    assert len(tasks) == 4  # four different HumanEval tasks, not four holes in the first one


def test_eval_command_runs_the_three_decodings_on_a_real_model(tiny_model_dir, tmp_path, capsys):
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    code = cli_main(["eval", "--model", str(model_dir), "--limit", "2", "--json", "--threads", "1",
                     "--max-steps", "4", "--verify-steps", "1", "--record"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["decoding"], r["benchmark"]): r for r in result["rows"]}
    decodings = ("diffusion", "autoregressive", "verified")
    assert set(rows) == {(d, b) for d in decodings for b in ("single-line", "multi-line")}
    for benchmark in ("single-line", "multi-line"):  # verified decoding is greedy decoding: the same outcome
        assert rows[("verified", benchmark)]["pass_at_1"] == rows[("autoregressive", benchmark)]["pass_at_1"]
        assert rows[("verified", benchmark)]["accepted_per_verification"] >= 1
        assert rows[("verified", benchmark)]["steps_per_canvas"] <= 1
    for row in rows.values():
        assert row["problems"] == 2
        assert 0.0 <= row["pass_at_1"] <= 1.0
        assert row["forward_passes"] >= 2 and row["ms_per_completion"] > 0
    assert rows[("diffusion", "single-line")]["forward_passes"] <= 4 + 1  # steps + one prefill
    assert result["cold_latency"]["prompt_tokens"] > 500
    assert json.loads((model_dir / "eval.json").read_text())["rows"] == result["rows"]


def test_saved_outputs_are_scored_again_without_a_model(tiny_model_dir, tmp_path, capsys):
    outputs = tmp_path / "outputs.jsonl"
    common = ["--benchmark", "single-line", "--limit", "2", "--json", "--pipeline"]
    assert cli_main(["eval", "--model", str(tiny_model_dir), *common, "--threads", "1", "--max-steps", "2",
                               "--no-latency", "--save-outputs", str(outputs), "--entropy-bound", "2",
                               "--t-max", "0.5", "--t-min", "0.25"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert (ran["sampler"]["entropy_bound"], ran["sampler"]["t_max"], ran["sampler"]["t_min"]) == (2.0, 0.5, 0.25)
    assert len(outputs.read_text().splitlines()) == 6  # 2 problems x 3 decodings
    assert cli_main(["eval", *common, "--rescore", str(outputs)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == ran["rows"]


def test_rescoring_executes_the_recorded_text(tmp_path, capsys):
    problems = humaneval.load_problems("single-line", limit=2)
    outputs = tmp_path / "outputs.jsonl"

    def rescore(texts: list[str]) -> float:
        entries = [{"benchmark": "single-line", "decoding": "diffusion", "task_id": p.task_id, "text": text,
                    "forward_passes": 3, "ms": 1.0} for p, text in zip(problems, texts, strict=True)]
        outputs.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
        assert cli_main(["eval", "--benchmark", "single-line", "--decoding", "diffusion", "--limit", "2",
                                   "--json", "--rescore", str(outputs)]) == 0
        return json.loads(capsys.readouterr().out)["rows"][0]["pass_at_1"]

    assert rescore([p.canonical_solution for p in problems]) == 1.0
    assert rescore(["    return not_a_name\n"] * 2) == 0.0


def _row(decoding: str, benchmark: str, pass_at_1: float, forward_passes: float) -> dict:
    return {"decoding": decoding, "benchmark": benchmark, "problems": 40, "pass_at_1": pass_at_1,
            "exact_match": 0.0, "forward_passes": forward_passes, "ms_per_completion": 100.0}


def test_model_card_status_is_computed_from_the_numbers():
    from dglsp.tools.model_card import status_lines

    good = {"rows": [_row("diffusion", "single-line", 0.2, 5.0), _row("autoregressive", "single-line", 0.1, 20.0)],
            "blank_floor": 0.03, "cold_latency": {"ms": 180.0, "prompt_tokens": 1000, "steps": 4}}
    text = "\n".join(status_lines(good))
    assert "clearly above" in text and "not clearly" not in text and "not met" not in text
    poor = {"rows": [_row("diffusion", "single-line", 0.05, 25.0), _row("autoregressive", "single-line", 0.0, 20.0)],
            "blank_floor": 0.025, "cold_latency": {"ms": 900.0, "prompt_tokens": 1000, "steps": 24}}
    text = "\n".join(status_lines(poor))
    assert "not clearly above" in text and text.count("not met") == 2
