"""Every path against a model saved the way google/diffusiongemma-26B-A4B-it is (`hub_model_dir`, scaled down).

Random weights write soup, so these assert on what each path did (the prompt's ids, the stop ids, the step count,
that an answer arrived and nothing failed), never on the text.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from remote_standin import StandIn
from scripted import ScriptedModel
from test_draft_e2e import record_edits
from test_server_e2e import capabilities, inline_params

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import CursorContext
from dglsp.config import EngineSettings, SamplerSettings, Settings
from dglsp.errors import ModelLoadError
from dglsp.model.engine import Engine
from dglsp.model.loading import load_engine, load_remote
from dglsp.model.remote import prompt_round_trips, render_prompt
from dglsp.tools.modelzoo import GEMMA4_EOS_IDS, GEMMA4_SPECIAL_IDS

SOURCE = "def add(a, b):\n    total = a + b\n    return \n\nprint(add(1, 2))\n"
FAST = {"sampler": {"max_steps": 2, "canvas_length": 16},
        "draft": {"max_steps": 2, "canvas_length": 16, "max_tokens": 32}}
TURN, END_OF_TURN, CHANNEL, CHANNEL_END = (GEMMA4_SPECIAL_IDS[t] for t in ("<|turn>", "<turn|>", "<|channel>",
                                                                           "<channel|>"))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(hub_model_dir) -> Engine:
    return load_engine(EngineSettings(model=str(hub_model_dir), device="cpu"))[1]


@pytest.fixture(scope="module")
def bundle(engine):
    return engine.bundle


@pytest.fixture
def source_file(tmp_path) -> Path:
    path = tmp_path / "calc.py"
    path.write_text(SOURCE)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dglsp", *args], capture_output=True, text=True, timeout=300)


def test_the_fixture_is_laid_out_like_the_hub_repository(hub_model_dir):
    names = {p.name for p in hub_model_dir.iterdir()}
    assert names == {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                     "tokenizer_config.json", "chat_template.jinja"}
    text = json.loads((hub_model_dir / "config.json").read_text())["text_config"]
    assert (text["vocab_size"], text["num_experts"], text["top_k_experts"]) == (262_144, 128, 8)
    assert text["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    generation = json.loads((hub_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == GEMMA4_EOS_IDS and generation["max_denoising_steps"] == 48


def test_chat_prompts_are_token_ids_and_stops_are_the_models(bundle, engine):
    completer = Completer(bundle, engine)
    assert completer.format.kind == "chat"
    from dglsp.completion.prompt import PromptBuilder

    ids = PromptBuilder(bundle.tokenizer, completer.format, Settings().context).build(
        CursorContext("def add(a, b):\n    return ", "\n", "calc.py", "python")).ids
    assert all(isinstance(token, int) for token in ids)
    assert ids[:2] == [GEMMA4_SPECIAL_IDS["<bos>"], TURN]
    assert ids[-3:] == [TURN, *bundle.tokenizer.encode("model\n", add_special_tokens=False)][-3:]
    assert engine.eos_ids == {*GEMMA4_EOS_IDS, END_OF_TURN}
    assert engine.defaults.max_steps == 48  # the checkpoint's own schedule, from generation_config.json


def test_dglsp_complete_runs_on_the_real_shaped_model(hub_model_dir, source_file):
    done = run_cli("complete", f"{source_file}:3:12", "--model", str(hub_model_dir), "--steps", "2",
                   "--canvas-length", "16", "--json", "--no-warmup")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert result["steps"] == 2 and result["prefill_tokens"] > 50 and result["generated_tokens"] <= 16


def test_dglsp_draft_runs_on_the_real_shaped_model(hub_model_dir, source_file):
    done = run_cli("draft", f"{source_file}:3:12", "--model", str(hub_model_dir), "--steps", "2",
                   "--canvas-length", "16", "--max-tokens", "32", "--json", "--no-warmup")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["canvases"] >= 1 and result["steps"] >= 2


def test_dglsp_eval_runs_on_the_real_shaped_model(hub_model_dir):
    done = run_cli("eval", "--model", str(hub_model_dir), "--limit", "2", "--benchmark", "single-line",
                   "--max-steps", "2", "--canvas-length", "8", "--no-latency", "--json", "--threads", "1")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert {row["decoding"] for row in rows} >= {"diffusion", "autoregressive"}
    assert all(row["problems"] == 2 for row in rows)


def test_a_missing_chat_template_is_a_clear_error_naming_the_file(hub_model_dir, tmp_path, source_file):
    broken = tmp_path / "no-template"
    shutil.copytree(hub_model_dir, broken)
    (broken / "chat_template.jinja").unlink()
    with pytest.raises(ModelLoadError, match="chat_template.jinja"):
        load_engine(EngineSettings(model=str(broken), device="cpu"))
    done = run_cli("complete", f"{source_file}:3:12", "--model", str(broken), "--no-warmup")
    assert done.returncode != 0
    assert "chat_template.jinja" in done.stderr and "Traceback" not in done.stderr


def test_thought_channel_text_never_reaches_the_editor(bundle):
    encode = lambda text: bundle.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    thought = [CHANNEL, *encode("thought\nThe user wants the sum."), CHANNEL_END]
    settings = Settings()
    context = CursorContext("def add(a, b):\n    return ", "\n", "calc.py", "python")
    answered = Completer(bundle, ScriptedModel([*thought, *encode("a + b"), END_OF_TURN]))
    assert answered.complete(context, settings).text == "a + b"
    still_thinking = Completer(bundle, ScriptedModel([CHANNEL, *encode("thought\nHmm, a + b or")]))
    assert still_thinking.complete(context, settings).raw == ""


def test_remote_backend_loads_and_renders_chat_prompts(hub_model_dir):
    standin = StandIn()
    standin.config.reply = lambda prompt: "<|channel>thought\nsum them<channel|>a + b<turn|>"
    try:
        settings, warnings = Settings().updated({"engine": {"backend": "remote", "model": str(hub_model_dir)},
                                                 "remote": {"url": standin.url}})
        assert not warnings
        bundle, backend = load_remote(settings, strict=True)
        completer = Completer(bundle, backend)
        context = CursorContext("def add(a, b):\n    return ", "\n", "calc.py", "python")
        from dglsp.completion.prompt import PromptBuilder

        ids = PromptBuilder(bundle.tokenizer, completer.format, settings.context).build(context).ids
        assert prompt_round_trips(bundle.tokenizer, ids)
        assert render_prompt(bundle.tokenizer, ids).startswith("<|turn>user\n")  # the server adds <bos> itself
        suggestion = completer.complete(context, settings)
        assert suggestion.text == "a + b"
        assert standin.completions()[-1].payload["skip_special_tokens"] is False
        backend.close()
    finally:
        standin.close()


@pytest.mark.e2e
async def test_language_server_serves_inline_completions_and_drafts(hub_model_dir):
    from pytest_lsp import ClientServerConfig

    config = ClientServerConfig(server_command=[sys.executable, "-m", "dglsp", "serve", "--model",
                                                str(hub_model_dir), "--threads", "1"])
    client = await config.start()
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={**FAST, "postprocess": {"hide_unparsable": False}}))
    edits = record_edits(client)
    uri = "file:///tmp/dglsp-real/calc.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)))
    result = await client.text_document_inline_completion_async(inline_params(2, 11, uri))
    assert isinstance(result, types.InlineCompletionList)
    draft = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dglsp.draft", arguments=[{"uri": uri, "position": {"line": 2, "character": 11}}]))
    assert "text" in draft and len(edits) == int(bool(draft["applied"]))
    errors = [m.message for m in client.log_messages if m.type == types.MessageType.Error]
    errors += [m.message for m in client.messages if m.type == types.MessageType.Error]
    assert errors == []
    assert any("prefill" in m.message for m in client.log_messages)
    await client.shutdown_session()
    await client.stop()


@pytest.mark.e2e
async def test_language_server_shows_a_missing_template_to_the_user(hub_model_dir, tmp_path):
    from pytest_lsp import ClientServerConfig

    broken = tmp_path / "no-template"
    shutil.copytree(hub_model_dir, broken)
    (broken / "chat_template.jinja").unlink()
    config = ClientServerConfig(server_command=[sys.executable, "-m", "dglsp", "serve", "--model", str(broken)])
    client = await config.start()
    await client.initialize_session(types.InitializeParams(capabilities=capabilities()))
    uri = "file:///tmp/dglsp-real/calc.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)))
    result = await client.text_document_inline_completion_async(inline_params(2, 11, uri))
    assert result is None or not result.items
    for _ in range(300):  # the load failure is shown as soon as the load job ends
        shown = [m.message for m in client.messages if m.type == types.MessageType.Error]
        if shown:
            break
        await asyncio.sleep(0.1)
    assert any("chat_template.jinja" in message for message in shown), shown
    await client.shutdown_session()
    await client.stop()


def test_generation_takes_the_models_own_steps_when_asked_for_none(engine):
    generation = engine.generate([GEMMA4_SPECIAL_IDS["<bos>"], TURN], engine.schedule(SamplerSettings(canvas_length=4,
                                                                                                       seed=0)))
    assert generation.stats.steps == 48  # random weights never reach the 26B's confidence bound: every step runs
