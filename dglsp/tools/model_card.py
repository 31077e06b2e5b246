"""The model card and training log of a model directory, written from what the directory records.

`MODEL_CARD.md` is generated, never edited by hand: from `dglsp.json` (the `training` block `dglsp train`
writes, with its training log of one row per stretch of training), `MANIFEST.json` (the corpus), `eval.json`
(the last `dglsp eval --record`) and `MODEL_CARD.extra.md` (hand-written sections kept beside it). Training
writes the card at each export and evaluation rewrites it, so this module imports no training code.
"""

from __future__ import annotations

import json
from pathlib import Path

from dglsp.tools.options import TrainConfig, cooldown_start


def write_model_card(model_dir: Path) -> None:
    """MODEL_CARD.md from what the directory records: dglsp.json (training), MANIFEST.json, eval.json."""
    meta = json.loads((model_dir / "dglsp.json").read_text())
    training = meta.get("training", {})
    manifest = json.loads((model_dir / "MANIFEST.json").read_text())
    evaluation = json.loads((model_dir / "eval.json").read_text()) if (model_dir / "eval.json").is_file() else None
    totals = manifest["totals"]
    licenses = sorted({p["license"] for p in manifest["packages"]})
    size_mb = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file()) / 1e6
    lines = [
        "# dglsp embedded model",
        "",
        "A small DiffusionGemma (`DiffusionGemmaForBlockDiffusion`) trained from scratch for code infilling,",
        "in dglsp's FIM format: the encoder reads `<bos> <|file|> path\\n <|suffix|> SUFFIX <|prefix|> PREFIX",
        "<|middle|>`; the canvas holds the middle, then `<eos>`, then `<pad>`.",
        "",
        "## Training",
        "",
        f"- Parameters: {training.get('parameters', 0):,} (preset `{training.get('preset')}`), weights stored as"
        f" {training.get('weights_dtype')}; directory size {size_mb:.1f} MB.",
        f"- Steps: {training.get('steps')}, tokens through the model: {training.get('tokens_seen', 0):,}"
        f" ({training.get('loss_tokens_seen', 0):,} carried a loss), training time"
        f" {training.get('train_hours')} h on `{training.get('device')}` ({training.get('threads')} thread(s)),"
        f" {_tokens_per_second(training):,.0f} tokens/s over all runs; the last run computed in"
        f" {training.get('compute') or training.get('config', {}).get('precision', 'float32')}.",
        f"- Learning rate: {_schedule(training.get('config', {}))}.",
        f"- Best held-out loss (canvas + AR): {training.get('best_held_out_loss')}; last eval: {training.get('last')}.",
        "- Objective: uniform-token corruption of the canvas (t ~ U(eps, 1)), weighted canvas cross-entropy"
        " (middle and EOS 1, padding down-weighted), two-pass self-conditioning (p = 0.5), and the encoder's"
        " next-token loss on the whole prompt and the clean middle.",
        f"- Command: `{training.get('command')}`",
        f"- Serving default (`dglsp.json`): {_serving_default(meta)}.",
        "",
        "### Training log",
        "",
        "One row per stretch of training (CPU-hours and tokens are totals at the stretch's end; rows marked ~ were",
        "reconstructed from session notes, their CPU-hours counting both cores busy throughout).",
        "`dglsp eval --plot-training PNG` draws it: held-out loss and pass@1 against CPU-hours.",
        "",
        *training_log_table(training.get("log", [])),
        *extra_sections(model_dir),
        "",
        "## Data",
        "",
        f"- {totals['files']:,} Python files, {totals['bytes']:,} bytes, {totals['tokens']:,} tokens from"
        f" {len(manifest['packages'])} packages (`MANIFEST.json`: package, version, licence, files, bytes, tokens).",
        f"- Licences of the sources: {', '.join(licenses)}. Only permissive licences were admitted; the model is"
        " released under Apache-2.0, like dglsp.",
        f"- Filters: {json.dumps(manifest.get('filters', {}))}",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation:
        lines += render_eval_table(evaluation)
        lines += ["", "## Status against the targets", ""] + status_lines(evaluation)
    else:
        lines.append("Not evaluated yet: run `dglsp eval --model DIR --record`.")
    (model_dir / "MODEL_CARD.md").write_text("\n".join(lines) + "\n")


def training_log_table(rows: list[dict]) -> list[str]:
    lines = ["| stretch | steps | tokens seen | CPU-hours | held-out loss | single-line pass@1 (diffusion / "
             "token-by-token / verified) | multi-line pass@1 |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        scores = row.get("pass_at_1", {})
        mark = "~" if row.get("cpu_hours_estimated") else ""
        loss = row.get("held_out_loss")
        lines.append(f"| {row.get('date')} | {row.get('from_step', 0)}–{row.get('steps')} | "
                     f"{row.get('tokens_seen', 0):,} | {mark}{row.get('cpu_hours', 0):.2f} | "
                     f"{'-' if loss is None else f'{loss:.4f}'} | {_scores(scores, 'single-line')} | "
                     f"{_scores(scores, 'multi-line')} |")
    notes = [f"- {row.get('date')}, steps {row.get('from_step', 0)}–{row.get('steps')}: {prefix}{row[key]}"
             for row in rows for key, prefix in (("held_out_metric", "held-out loss: "), ("held_out_note", ""),
                                                 ("note", "")) if row.get(key)]
    return lines + ([""] + notes if notes else [])


def _scores(scores: dict, benchmark: str) -> str:
    found = scores.get(benchmark, {})
    return " / ".join(f"{found[d]:.2f}" if d in found else "-" for d in ("diffusion", "autoregressive", "verified"))


def extra_sections(model_dir: Path) -> list[str]:
    """Hand-written sections kept beside the generated card (`MODEL_CARD.extra.md`: comparisons, calibration)."""
    extra = model_dir / "MODEL_CARD.extra.md"
    return ["", *extra.read_text().rstrip().splitlines()] if extra.is_file() else []


def record_eval(model_dir: Path, result: dict) -> None:
    """Put an eval's pass@1 into the training log row of the weights it evaluated (dglsp.json)."""
    meta_file = model_dir / "dglsp.json"
    meta = json.loads(meta_file.read_text())
    training = meta.get("training", {})
    rows = training.get("log") or []
    if not rows or rows[-1].get("steps") != training.get("steps"):
        return
    scores = rows[-1].setdefault("pass_at_1", {})
    for row in result["rows"]:
        if "+" not in row["decoding"]:
            scores.setdefault(row["benchmark"], {})[row["decoding"]] = round(row["pass_at_1"], 4)
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")


def _schedule(config: dict) -> str:
    """The last run's learning-rate schedule in words (earlier runs held the peak rate)."""
    peak = config.get("lr", TrainConfig.lr)
    steps, cooldown = config.get("max_steps", 0), config.get("cooldown_steps", 0)
    words = f"AdamW, {config.get('warmup_steps', TrainConfig.warmup_steps)} warmup steps, then {peak:g}"
    if not (steps and cooldown):
        return words + " constant"
    floor = peak * config.get("min_lr_ratio", TrainConfig.min_lr_ratio)
    start = cooldown_start(TrainConfig(max_steps=steps, cooldown_steps=cooldown))
    return words + f" until step {start}, then linearly down to {floor:g} at step {steps}"


def _serving_default(meta: dict) -> str:
    """The decoding ghost text and drafts use unless told, and the confidence gate's threshold."""
    decoding = meta.get("sampler", {}).get("decoding", "diffusion")
    gate = meta.get("postprocess", {}).get("min_confidence")
    return f"`{decoding}` decoding" + (f", confidence gate {gate}" if gate else ", no confidence gate")


def _tokens_per_second(training: dict) -> float:
    hours = training.get("train_hours") or 0
    return training.get("tokens_seen", 0) / (hours * 3600) if hours else 0.0


def render_eval_table(evaluation: dict) -> list[str]:
    lines = [f"HumanEval-Infilling, command: `{evaluation.get('command')}` on {evaluation.get('device')}.", "",
             "| decoding | benchmark | problems | pass@1 | exact match | forward passes | ms / completion |",
             "|---|---|---|---|---|---|---|"]
    for row in evaluation["rows"]:
        lines.append(f"| {row['decoding']} | {row['benchmark']} | {row['problems']} | {row['pass_at_1']:.3f} |"
                     f" {row['exact_match']:.3f} | {row['forward_passes']:.1f} | {row['ms_per_completion']:.0f} |")
    if evaluation.get("sampler"):
        sampler = evaluation["sampler"]
        lines += ["", f"Diffusion decoding: {sampler['max_steps']} steps at most per {sampler['canvas_length']}-token"
                      f" canvas, entropy bound {sampler['entropy_bound']}, temperature {sampler['t_max']} to"
                      f" {sampler['t_min']} (the model's diffusion schedule, `sampler` in `dglsp.json`)."]
    if evaluation.get("blank_floor") is not None:
        lines += ["", f"Blank-middle floor (single-line, same problems): {evaluation['blank_floor']:.3f}."]
    if evaluation.get("cold_latency"):
        latency = evaluation["cold_latency"]
        lines += ["", f"Cold completion (fresh cache, {latency['prompt_tokens']}-token context, one canvas):"
                      f" {latency['ms']} ms, {latency['steps']} denoising steps."]
    return lines


def status_lines(evaluation: dict) -> list[str]:
    """Plain statements computed from eval.json: what the numbers do and do not show."""
    rows = {(r["decoding"], r["benchmark"]): r for r in evaluation["rows"]}
    lines = []
    floor = evaluation.get("blank_floor")
    single = [r for (d, b), r in rows.items() if b == "single-line" and "+" not in d]
    if single and floor is not None:
        best = max(single, key=lambda r: r["pass_at_1"])
        verdict = "clearly above" if best["pass_at_1"] >= max(2 * floor, floor + 0.05) else "not clearly above"
        lines.append(f"- Single-line pass@1: best {best['pass_at_1']:.3f} ({best['decoding']}, {best['problems']}"
                     f" problems) is {verdict} the blank-line floor {floor:.3f}; the goal is 0.15.")
    for benchmark in ("single-line", "multi-line"):
        diffusion, autoregressive = rows.get(("diffusion", benchmark)), rows.get(("autoregressive", benchmark))
        if diffusion and autoregressive and autoregressive["forward_passes"]:
            ratio = diffusion["forward_passes"] / autoregressive["forward_passes"]
            lines.append(f"- {benchmark}: diffusion uses {ratio:.2f}x the forward passes of token-by-token decoding"
                         f" (target <= 0.25){'' if ratio <= 1 / 4 else ': not met'}.")
    latency = evaluation.get("cold_latency")
    if evaluation.get("notes"):
        lines.append(f"- Note: {evaluation['notes']}")
    if latency:
        load = evaluation.get("load_average")
        lines.append(f"- Cold ~1k-token completion: {latency['ms']} ms (target <= 200 ms)"
                     f"{'' if latency['ms'] <= 200 else ': not met'}"
                     f"{f', measured at load average {load[0]}' if load else ''}.")
    return lines
