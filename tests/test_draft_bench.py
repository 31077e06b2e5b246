"""`dglsp bench --draft` runs both decodings on the same prompts and counts their work honestly."""

from __future__ import annotations

import json

from dglsp.cli import main
from dglsp.tools.bench_draft import body_problems


def test_body_problems_are_signature_and_docstring_only():
    problems = body_problems(3)
    assert len(problems) == 3
    for problem in problems:
        assert problem.task_id.endswith("/L0")
        assert problem.prompt.rstrip().endswith('"""') or problem.prompt.rstrip().endswith("'''")
        assert f"def {problem.entry_point}" in problem.prompt


def test_draft_bench_json(tiny_model_dir, capsys):
    code = main(["bench", "--draft", "--model", str(tiny_model_dir), "--lengths", "32", "--prompts", "1",
                 "--problems", "1", "--steps", "2", "--max-tokens", "32", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["decoding"]: row for row in report["speed"]}
    assert rows["token-by-token"]["forward_passes"] == 32  # one pass per token, EOS ignored
    # Two canvases of 16: the prompt, 2 steps, the first canvas committed, 2 more steps.
    assert rows["block diffusion"]["forward_passes"] == 6
    assert {row["decoding"] for row in report["quality"]} == {"block diffusion", "token-by-token"}
    assert all(row["problems"] == 1 for row in report["quality"])
