"""Run `transformers serve` for a text-only DiffusionGemma (the real OpenAI-compatible server in our tests).

transformers loads DiffusionGemma's processor (`Gemma4Processor`) even for text, and that needs
torchvision; PyPI's torchvision links CUDA torch and cannot load beside our CPU torch. Text
completions only ever use the tokenizer, so the processor is replaced by the tokenizer here, and
nothing else about the server changes. Usage: python transformers_serve_textonly.py MODEL_DIR [serve options]
"""

from __future__ import annotations

import sys

from transformers import AutoTokenizer
from transformers.cli.serving import model_manager


def _load_tokenizer(self, model_id_and_revision: str, gguf_file: str | None = None):
    model_id, revision = model_id_and_revision.split("@", 1)
    return AutoTokenizer.from_pretrained(model_id, revision=revision)


if __name__ == "__main__":
    model_manager.ModelManager._load_processor = _load_tokenizer
    from transformers.cli.transformers import main

    sys.argv = ["transformers", "serve", *sys.argv[1:]]
    main()
