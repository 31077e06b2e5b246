"""The completion layer: text in, text out (prompts, scheduling, post-processing); no pygls, no torch."""
