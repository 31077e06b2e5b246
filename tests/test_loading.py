"""The one loader: hub downloads (offline here: from a Hugging Face cache laid out on disk), progress, the
memory check, and `dglsp download`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dglsp.errors import ModelLoadError
from dglsp.model import loading


def hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding `repo_id` at one snapshot, as `hf download` leaves it."""
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dglsp", *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture
def offline_env(tmp_path, monkeypatch) -> dict:
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    monkeypatch.setenv("HF_HOME", env["HF_HOME"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return env


def test_dglsp_download_finds_and_checks_a_cached_model_offline(hub_model_dir, tmp_path, offline_env):
    hub_cache(tmp_path / "hf", "google/diffusiongemma-test", hub_model_dir)
    done = run_cli("download", "google/diffusiongemma-test", env=offline_env)
    assert done.returncode == 0, done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr
    assert "chat_template.jinja" in done.stdout and "files check out" in done.stdout


def test_a_model_missing_from_the_cache_offline_is_named_with_the_fix(tmp_path, offline_env):
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*dglsp download google/absent"):
        loading.resolve_model_dir("google/absent")
    done = run_cli("download", "google/absent", env=offline_env)
    assert done.returncode != 0 and "dglsp download google/absent" in done.stderr and "Traceback" not in done.stderr


def test_a_truncated_cached_download_is_caught_by_the_check(hub_model_dir, tmp_path, offline_env):
    snapshot = hub_cache(tmp_path / "hf", "google/diffusiongemma-cut", hub_model_dir)
    weights = snapshot / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    done = run_cli("download", "google/diffusiongemma-cut", env=offline_env)
    assert done.returncode != 0 and "truncated" in done.stderr


def test_download_progress_reaches_the_callback():
    seen: list[tuple[str, int]] = []
    bar = loading._reporting_tqdm(lambda message, percent: seen.append((message, percent)))(
        total=4_000_000_000, unit="B", unit_scale=True, mininterval=0)
    bar.update(1_000_000_000)
    bar.refresh()
    assert seen and seen[-1] == ("downloading 1.0 of 4.0 GB", 25)


def test_a_model_that_cannot_fit_is_refused_before_loading(hub_model_dir, monkeypatch):
    monkeypatch.setattr(loading, "device_free_bytes", lambda device: 100 << 20)  # a device with 100 MB free
    with pytest.raises(ModelLoadError, match=r"needs about .* GB .* but cpu has 0.1 GB free"):
        loading.check_memory(hub_model_dir, torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(loading, "device_free_bytes", lambda device: 64 << 30)
    needed = loading.check_memory(hub_model_dir, torch.device("cpu"), torch.bfloat16)
    assert needed == loading.weight_bytes(hub_model_dir)[0] * 2  # bf16: two bytes a parameter


def test_weights_load_straight_onto_the_device(hub_model_dir):
    from dglsp.config import EngineSettings

    _, model = loading.load_local(EngineSettings(model=str(hub_model_dir), device="cpu", dtype="bfloat16"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
