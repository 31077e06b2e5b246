"""Build small DiffusionGemma models and their tokenizer: the embedded default, and the test fixture.

A model directory that dglsp loads holds `config.json`, `model.safetensors`,
`generation_config.json`, `tokenizer.json` (+ `tokenizer_config.json`) and, for
models we trained, `dglsp.json` with the prompt format (see `prompt.py`). The same
loading code reads these and the released `google/diffusiongemma-26B-A4B-it`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    DiffusionGemmaConfig,
    DiffusionGemmaForBlockDiffusion,
    DiffusionGemmaTextConfig,
    Gemma4VisionConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)

from dglsp.model.schedule import ModelDefaults, Schedule

TOY_STEPS = 24  # the steps a test model recommends (DiffusionGemma's 48 would only slow the tests down)

# Order matters: pad/eos/bos take ids 0/1/2, the ids DiffusionGemma's config expects.
SPECIAL_TOKENS = {
    "pad": "<pad>",
    "eos": "<eos>",
    "bos": "<bos>",
    "file": "<|file|>",
    "snippet": "<|snippet|>",
    "suffix": "<|suffix|>",
    "prefix": "<|prefix|>",
    "middle": "<|middle|>",
}



@dataclass(frozen=True)
class Preset:
    """The shape of a small DiffusionGemma. Layer types follow Gemma's 5:1 sliding/full pattern."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    sliding_window: int
    canvas_length: int


PRESETS: dict[str, Preset] = {
    # Seconds to build; used by the test suite as "a real small DiffusionGemma".
    "tiny": Preset(64, 2, 2, 1, 32, 128, 2, 1, 64, 64, 16),
    # The embedded default: sized so a cold 1k-token completion stays well under 300 ms on 2 CPU cores.
    "small": Preset(256, 6, 4, 2, 64, 768, 4, 2, 256, 512, 32),
    "base": Preset(384, 8, 6, 2, 64, 1152, 4, 2, 384, 512, 32),
    # Deep and thin (8.6M parameters): twice small's layers at 0.6x its width, for the shape comparison
    # of scripts/compare_training.sh (both shapes from scratch, on the same CPU time).
    "deep": Preset(160, 12, 2, 1, 80, 480, 4, 2, 160, 512, 32),
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE: every byte sequence round-trips, so any file can be encoded."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tokenizer)


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        additional_special_tokens=[SPECIAL_TOKENS[k] for k in ("file", "snippet", "suffix", "prefix", "middle")],
        clean_up_tokenization_spaces=False,
    )


def build_config(preset: Preset, vocab_size: int) -> DiffusionGemmaConfig:
    layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(preset.num_hidden_layers)]
    layer_types[-1] = "full_attention"
    # global_head_dim and num_global_key_value_heads are init-only: the config's __post_init__ pops them from
    # its keyword arguments, which the dataclass signature mypy reads does not list.
    text_config = DiffusionGemmaTextConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        head_dim=preset.head_dim,
        global_head_dim=preset.head_dim,
        num_global_key_value_heads=preset.num_key_value_heads,
        num_experts=preset.num_experts,
        top_k_experts=preset.top_k_experts,
        moe_intermediate_size=preset.moe_intermediate_size,
        sliding_window=preset.sliding_window,
        layer_types=layer_types,
        max_position_embeddings=32768,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    # Without an explicit tiny vision tower transformers builds a 167M-parameter one.
    vision_config = Gemma4VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=16,
    )
    return DiffusionGemmaConfig(
        text_config=text_config, vision_config=vision_config, canvas_length=preset.canvas_length,
    )


def build_model(preset: Preset, vocab_size: int, seed: int = 0) -> DiffusionGemmaForBlockDiffusion:
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(build_config(preset, vocab_size))
    return model.eval()


def generation_config_for(
    schedule: ModelDefaults | Schedule, tokenizer: PreTrainedTokenizerBase
) -> DiffusionGemmaGenerationConfig:
    """transformers' generation config for a schedule (DiffusionGemma's rule: its stop thresholds are fixed)."""
    return DiffusionGemmaGenerationConfig(
        max_new_tokens=schedule.canvas_length,
        max_denoising_steps=schedule.max_steps,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(schedule.entropy_bound)),
        t_min=schedule.t_min,
        t_max=schedule.t_max,
        stability_threshold=getattr(schedule, "stability_threshold", 1),
        confidence_threshold=getattr(schedule, "confidence_threshold", 0.005),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def fim_format_spec(snippets: bool = False) -> dict:
    """The prompt format our own models are trained with (read back by `prompt.PromptFormat`); `snippets`: it
    was trained with snippets of other files in the prompt, so the server adds them by default."""
    return {"kind": "fim", "tokens": dict(SPECIAL_TOKENS), **({"snippets": True} if snippets else {})}


def save_model_dir(
    model: DiffusionGemmaForBlockDiffusion,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    defaults: ModelDefaults | None = None,
    dtype: torch.dtype | None = None,
    extra: dict | None = None,
    snippets: bool = False,
) -> Path:
    """Write a model directory dglsp (and transformers) can load: safetensors only; `defaults` is the decoding it
    recommends (dglsp.json), by default DiffusionGemma's rule at TOY_STEPS."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Our models' configs always set canvas_length (transformers allows None).
    defaults = defaults or ModelDefaults(canvas_length=cast(int, model.config.canvas_length), max_steps=TOY_STEPS)
    model.generation_config = generation_config_for(defaults, tokenizer)
    # transformers wraps PreTrainedModel.to with functools.wraps, whose type wants the model as an argument.
    to_save = model if dtype is None else model.to(dtype)  # type: ignore[arg-type]
    to_save.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    meta = {"prompt_format": fim_format_spec(snippets), **defaults.to_meta(), **(extra or {})}
    (out_dir / "dglsp.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


# -- a model saved the way google/diffusiongemma-26B-A4B-it is --------------------------------------------

HUB_CONFIG = Path(__file__).parent / "data" / "diffusiongemma-26B-A4B.json"
# Gemma 4's special tokens at the released tokenizer's ids.
GEMMA4_SPECIAL_IDS = {
    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<mask>": 4, "<|tool_response>": 50, "<|think|>": 98, "<|channel>": 100,
    "<channel|>": 101, "<|turn>": 105, "<turn|>": 106,
}
GEMMA4_EOS_IDS = [1, 106, 50]  # generation_config.json's eos_token_id
FIRST_TEXT_ID = 300  # ids below this (but the specials) are unused, as in the released vocabulary's head
# Gemma 4's chat template: `<bos>[<|turn>system\n...<turn|>\n]<|turn>user\n...<turn|>\n<|turn>model\n`;
# `enable_thinking` puts `<|think|>` in the system turn, and the model then reasons in `<|channel>thought ...`.
GEMMA4_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none -%}"
    "{%- if system is not none or enable_thinking -%}"
    "{{ '<|turn>system\\n' }}{% if enable_thinking %}{{ '<|think|>' }}{% endif %}{{ (system or '') + '<turn|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{{ '<|turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}"
    "{{ message['content'] + '<turn|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|turn>model\\n' }}{%- endif -%}"
)


def hub_config(config_file: Path = HUB_CONFIG, scaled: bool = False) -> DiffusionGemmaConfig:
    """The DiffusionGemma config of a published checkpoint's shapes (a config.json, or our data file with its
    `scaled` widths applied when `scaled`)."""
    spec = json.loads(Path(config_file).read_text())
    text = dict(spec["text_config"])
    if scaled:
        text.update(spec.get("scaled", {}))
    layers = text["num_hidden_layers"]
    text.setdefault("layer_types", ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(layers)])
    text["layer_types"][-1] = "full_attention"
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1,
                                num_key_value_heads=1, head_dim=16)
    return DiffusionGemmaConfig(text_config=DiffusionGemmaTextConfig(**text), vision_config=vision,
                                canvas_length=spec.get("canvas_length", 256))


def gemma4_like_tokenizer(texts: Iterable[str], vocab_size: int = 262_144,
                          merges_vocab: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, remapped so Gemma 4's special tokens sit at their real ids and padded
    with unused entries to the real vocabulary size; it carries Gemma 4's chat template."""
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=merges_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model = json.loads(trained.to_str())["model"]
    vocab = {token: token_id for token, token_id in GEMMA4_SPECIAL_IDS.items()}
    for token, token_id in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab[token] = FIRST_TEXT_ID + token_id
    taken = set(vocab.values())
    vocab.update({f"<unused{i}>": i for i in range(vocab_size) if i not in taken})
    # Each merge is a pair: "a b" in older tokenizers' JSON, ["a", "b"] in newer ones.
    merges = [cast(tuple[str, str], tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m))
              for m in model["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Like Gemma's tokenizer, text encoded with special tokens starts with <bos> (a server tokenizing a text
    # prompt adds it itself).
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", GEMMA4_SPECIAL_IDS["<bos>"])])
    names = {"<pad>": "pad_token", "<eos>": "eos_token", "<bos>": "bos_token", "<mask>": "mask_token"}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, clean_up_tokenization_spaces=False,
        **{name: token for token, name in names.items()},
        additional_special_tokens=[token for token in GEMMA4_SPECIAL_IDS if token not in names],
    )
    wrapped.chat_template = GEMMA4_CHAT_TEMPLATE
    return wrapped


def save_hub_like_model(out_dir: Path, texts: Iterable[str], config_file: Path = HUB_CONFIG, scaled: bool = True,
                        seed: int = 0) -> Path:
    """A model directory laid out like the hub repository: config.json, bf16 model.safetensors,
    generation_config.json (EOS ids [1, 106, 50], 48 steps), tokenizer.json + tokenizer_config.json and
    chat_template.jinja; no dglsp.json. Random weights: for the paths, not for the text."""
    torch.manual_seed(seed)
    tokenizer = gemma4_like_tokenizer(texts)
    model = DiffusionGemmaForBlockDiffusion(hub_config(config_file, scaled=scaled)).eval()
    generation = generation_config_for(ModelDefaults(canvas_length=256), tokenizer)
    generation.eos_token_id = list(GEMMA4_EOS_IDS)
    model.generation_config = generation
    out_dir = Path(out_dir)
    model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
