"""`dglsp bench`: its helpers, and a fast smoke run of the whole replay against the real server."""

from __future__ import annotations

import json
import random

import pytest

from dglsp.cli import build_parser, main
from dglsp.tools import bench_typing as bench


def synthetic_source(functions_before: int = 40) -> str:
    filler = "".join(f"def helper_{i}(x):\n    return x * {i} + 1\n\n\n" for i in range(functions_before))
    target = ('def mean(values):\n    """The arithmetic mean of a non-empty sequence."""\n    total = 0\n'
              "    for value in values:\n        total += value\n    return total / len(values)\n")
    return filler + target + "\n\nprint(mean([1, 2, 3]))\n"


def test_pick_functions_removes_the_function_and_fits_the_budget(tmp_path, tiny_tokenizer):
    source = tmp_path / "module.py"
    source.write_text(synthetic_source())
    prefix_tokens = len(tiny_tokenizer.encode(source.read_text().split("def mean")[0]))
    plans = bench.pick_functions([source], tiny_tokenizer, 1, prefix_budget=int(prefix_tokens * 1.3),
                                 max_chars=400, rng=random.Random(0))
    assert len(plans) == 1
    plan = plans[0]
    assert plan.target.startswith("def mean(values):")
    assert plan.document[: plan.offset] + plan.target + plan.document[plan.offset:] == source.read_text()
    assert plan.prefix_tokens == prefix_tokens


def test_long_files_pick_functions_deeper_than_twice_the_budget(tmp_path, tiny_tokenizer):
    source = tmp_path / "module.py"
    source.write_text(synthetic_source())
    prefix_tokens = len(tiny_tokenizer.encode(source.read_text().split("def mean")[0]))
    pick = dict(max_chars=400, rng=random.Random(0), long_files=True)
    plans = bench.pick_functions([source], tiny_tokenizer, 1, prefix_budget=prefix_tokens // 3, **pick)
    assert plans[0].target.startswith("def mean(values):") and plans[0].prefix_tokens >= 2 * (prefix_tokens // 3)
    with pytest.raises(SystemExit, match="no function"):  # the helpers are short and mean sits above 2x budget
        bench.pick_functions([source], tiny_tokenizer, 1, prefix_budget=prefix_tokens, **pick)


def test_pick_functions_explains_when_nothing_fits(tmp_path, tiny_tokenizer):
    source = tmp_path / "module.py"
    source.write_text(synthetic_source(1))
    with pytest.raises(SystemExit, match="no function"):
        bench.pick_functions([source], tiny_tokenizer, 1, prefix_budget=4000, max_chars=400, rng=random.Random(0))


def test_baseline_turns_the_latency_features_off():
    args = build_parser().parse_args(["bench", "--baseline", "--context-tokens", "1024"])
    options = bench.server_settings(args)
    assert options["latency"] == {"prefix_cache": False, "typing_through": False, "prefetch": False}
    assert options["context"]["max_prefix_tokens"] + options["context"]["max_suffix_tokens"] == 1024
    assert "latency" not in bench.server_settings(build_parser().parse_args(["bench"]))


def test_percentile():
    assert bench.percentile([], 0.5) is None
    assert bench.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert bench.percentile([float(v) for v in range(1, 101)], 0.95) == 95.0


@pytest.mark.e2e
@pytest.mark.slow  # a whole replay: ~30 s on an idle 2-core machine, minutes on a loaded one
def test_bench_smoke_run_reports_every_metric(tmp_path, tiny_model_dir, tiny_tokenizer, capsys):
    source = tmp_path / "module.py"
    source.write_text(synthetic_source())
    prefix_tokens = len(tiny_tokenizer.encode(source.read_text().split("def mean")[0]))
    context_tokens = int(prefix_tokens * 1.5)  # 7/8 of it is the prefix budget: ~1.3x the code before `mean`
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny_model_dir), "--files", str(source), "--functions", "1",
                 "--context-tokens", str(context_tokens), "--time-scale", "0.05", "--completions", "1", "--tokens", "8",
                 "--settings", '{"sampler": {"max_steps": 4}}', "--json-file", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "time-to-suggestion after a pause" in table and "block diffusion speed-up" in table
    assert "first request after opening a document" in table
    assert len(result["first_after_open_ms"]) == 1 and isinstance(result["prefill_on_focus_tokens"], int)
    assert result["keystrokes"] >= 1 and result["requests"] >= 1
    assert result["forward_passes_shown"] + result["forward_passes_empty"] + result["forward_passes_wasted"] > 0
    assert result["prefix_cache_hit_rate"] is not None and result["server_rss_mb"] > 0
    assert result["side_by_side"]["ar_fp"] >= 1 and result["side_by_side"]["diffusion_fp"] >= 1
    assert result["side_by_side"]["verified_fp"] >= 2 and result["side_by_side"]["verified_accepted"] >= 1


def test_random_weight_shapes_benchmark_runs_on_a_scaled_config(capsys):
    from dglsp.tools.modelzoo import HUB_CONFIG

    assert main(["bench", "--random-weights", str(HUB_CONFIG), "--scaled", "--device", "cpu", "--threads", "1",
                 "--prefill-tokens", "64", "--canvas-lengths", "8", "--steps", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["parameters_b"] > 0.01 and result["prefill_ms"]["64"] > 0
    assert result["step_ms_eager"]["8"] > 0 and "CUDA only" in result["step_ms_compiled"]
    assert result["peak_memory_gb"] > 0


def test_step_benchmark_splits_each_pass_by_phase_against_its_floor(tiny_model_dir, capsys):
    assert main(["bench", "step", "--model", str(tiny_model_dir), "--threads", "1", "--prefill-tokens", "300",
                 "--canvas-lengths", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["pass"].split(" (")[0] for row in result["rows"]] == ["denoising step", "encoder one-token pass",
                                                                      "prefill chunk"]
    for row in result["rows"]:
        assert row["ms"] > 0 and row["matmul_ms"] > 0 and row["floor_ms"] > 0
        assert row["ratio"] == pytest.approx(row["ms"] / row["floor_ms"], rel=0.05)
    assert result["rows"][0]["sampling_ms"] > 0 and result["sampling"] == "fast" and result["lean_passes"]


def test_the_step_benchmark_times_transformers_passes_when_the_lean_ones_are_off(tiny_model_dir, capsys):
    assert main(["bench", "step", "--model", str(tiny_model_dir), "--threads", "1", "--prefill-tokens", "64",
                 "--canvas-lengths", "8", "--json", "--settings", '{"latency": {"lean_passes": false}}']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lean_passes"] is False and result["rows"][0]["ms"] > 0
