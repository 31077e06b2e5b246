"""The training curve drawn from a model's training log (`dglsp eval --plot-training`)."""

from __future__ import annotations

import json

import pytest

from dglsp.cli import main as cli_main
from dglsp.model.loading import EMBEDDED_MODEL_DIR

LOG = [
    {"cpu_hours": 5.1, "tokens_seen": 12_800_000, "held_out_loss": 5.67, "held_out_metric": "old",
     "pass_at_1": {"single-line": {"diffusion": 0.01, "autoregressive": 0.04}}},
    {"cpu_hours": 9.96, "tokens_seen": 24_988_664, "held_out_loss": 4.57, "held_out_metric": "old"},
    {"cpu_hours": 12.25, "tokens_seen": 32_493_965, "held_out_loss": 4.17, "from_held_out_loss": 5.08,
     "pass_at_1": {"single-line": {"diffusion": 0.01, "autoregressive": 0.07, "verified": 0.07}}},
]


def _model_dir(tmp_path, log):
    (tmp_path / "dglsp.json").write_text(json.dumps({"training": {"log": log}}))
    return tmp_path


def test_each_held_out_metric_is_its_own_line_and_a_changed_metric_starts_at_its_starting_weights(tmp_path, capsys):
    png = tmp_path / "curve.png"
    assert cli_main(["eval", "--plot-training", str(_model_dir(tmp_path, LOG)), str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(capsys.readouterr().out)
    assert summary["losses"] == {"old": [[5.1, 5.67], [9.96, 4.57]],
                                 "canvas + AR, unweighted": [[9.96, 5.08], [12.25, 4.17]]}
    # Only evaluated rows carry pass@1, so each decoding's line has the points it was measured at.
    assert summary["pass_at_1"] == {"diffusion": [[5.1, 0.01], [12.25, 0.01]],
                                    "autoregressive": [[5.1, 0.04], [12.25, 0.07]], "verified": [[12.25, 0.07]]}
    assert summary["cpu_hours"] == 12.25 and summary["stretches"] == 3


def test_a_model_without_a_training_log_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no training log"):
        cli_main(["eval", "--plot-training", str(_model_dir(tmp_path, [])), str(tmp_path / "curve.png")])


def test_the_embedded_model_has_a_curve_to_draw(tmp_path, capsys):
    assert cli_main(["eval", "--plot-training", str(tmp_path / "curve.png"), "--json"]) == 0
    shipped = json.loads((EMBEDDED_MODEL_DIR / "dglsp.json").read_text())["training"]
    assert json.loads(capsys.readouterr().out)["cpu_hours"] == shipped["log"][-1]["cpu_hours"]


def test_the_model_cards_training_log_names_a_rows_other_held_out_metric():
    from dglsp.tools.model_card import training_log_table

    rows = [dict(row, date=f"stretch {i}", steps=i) for i, row in enumerate(LOG)]
    notes = [line for line in training_log_table(rows) if line.startswith("- ")]
    assert notes == ["- stretch 0, steps 0–0: held-out loss: old", "- stretch 1, steps 0–1: held-out loss: old"]
