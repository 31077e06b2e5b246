"""A suggestion's confidence: how probable the model found the tokens the editor will show.

The backend reports each generated token's log-probability at temperature 1 (the decoder's at the canvas's
last step; the encoder's for verified and token-by-token decoding), so the gate does not move with the
sampling temperature. Post-processing usually keeps a prefix of the generated
text (the first line, the block), so the confidence is the geometric mean probability of the tokens that
make up the shown text: exp(mean log p). A suggestion below `postprocess.min_confidence` is not shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def shown_token_count(token_ids: list[int], shown: str, decode: Callable[[list[int]], str]) -> int:
    """The fewest leading tokens whose text covers `shown`."""
    return covering_count(lambda count: len(decode(token_ids[:count]).rstrip()), len(token_ids), shown)


def covering_count(text_length: Callable[[int], int], tokens: int, shown: str) -> int:
    """The fewest leading tokens whose text (`text_length(count)`: its length without trailing whitespace)
    covers `shown`; a binary search, as the length only grows with the count."""
    target = len(shown.rstrip())
    low, high = 0, tokens
    while low < high:
        middle = (low + high) // 2
        if text_length(middle) >= target:
            high = middle
        else:
            low = middle + 1
    return max(low, 1) if tokens and target else 0


def confidence(logprobs: list[float] | None, count: int) -> float | None:
    """exp(mean log-probability) of the first `count` tokens; None when the backend gave none."""
    if logprobs is None:
        return None
    picked = logprobs[:count]
    return math.exp(sum(picked) / len(picked)) if picked else 0.0


def suggestion_confidence(token_ids: list[int], logprobs: list[float] | None, shown: str,
                          decode: Callable[[list[int]], str]) -> float | None:
    if logprobs is None:
        return None
    return confidence(logprobs, shown_token_count(token_ids, shown, decode))
