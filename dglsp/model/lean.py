"""Lean passes: DiffusionGemma's text decoder step and encoder pass as transformers computes them, in far fewer
tensor ops.

On a CPU the embedded model's passes are bound by dispatch, not arithmetic: transformers issues ~3,000 small
ops a decoder step (a cast around every norm, a mask builder, an expert loop of `one_hot`/`nonzero`/`index_add`),
and at 256 hidden units their overhead costs more than their math. Here each layer is a few fused ops: one
matmul for q/k/v and one for gate/up, `F.rms_norm`, one `scaled_dot_product_attention`, and the mixture of
experts computed densely for every expert (a handful of small experts on a few dozen tokens cost less than
routing tokens to them one expert at a time). The decoder reads the encoder's cache and attends bidirectionally
without a mask (transformers builds none for an unpadded `DynamicCache`); the encoder appends to the cache
through its public `update` and attends causally, within the sliding window on sliding layers.

The weights are transformers' own tensors, except the q/k/v and gate/up pairs, concatenated once (copies: ~7 MB per
pass for the embedded model), and the norms' scales, kept in float32. The math follows
`DiffusionGemmaDecoderModel`, `DiffusionGemmaEncoderTextModel` and `DiffusionGemmaForBlockDiffusion.forward` with
the same dtypes, so the results agree with transformers' to rounding (the tests compare them). `supports(model)`
says which models it covers. The engine uses them on the CPU off the reference path (`sampling: "reference"` keeps
transformers' forward, bit-exact with `generate()`), and never for the prompt's prefill, whose cache every path
shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

from dglsp.model.kvcache import dynamic_layers

GELU_TANH = "gelu_pytorch_tanh"


@dataclass(frozen=True)
class _Layer:
    qkv: torch.Tensor  # [q + k (+ v), hidden]: the three projections as one matmul
    q_size: int
    kv_size: int
    has_v: bool  # full-attention layers have no v_proj: their values are the raw keys
    head_dim: int
    heads: int
    kv_heads: int
    layer_type: str
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    o_proj: torch.Tensor
    norms: dict[str, torch.Tensor]  # the layer's scaled RMS norms' weights, in float32
    gate_up: torch.Tensor  # [2 * intermediate, hidden]: the dense MLP's gate and up as one matmul
    down: torch.Tensor
    router_proj: torch.Tensor
    router_scale: torch.Tensor
    per_expert_scale: torch.Tensor
    experts_gate_up: torch.Tensor  # [E, 2 * moe_intermediate, hidden]
    experts_down: torch.Tensor  # [E, hidden, moe_intermediate]
    layer_scalar: torch.Tensor


def supports(model: DiffusionGemmaForBlockDiffusion) -> str | None:
    """None when the lean step computes what `model`'s decoder computes; else why not."""
    config = model.config.get_text_config()
    if getattr(config, "hidden_activation", None) != GELU_TANH:
        return f"activation {getattr(config, 'hidden_activation', None)!r}"
    if getattr(config, "attention_bias", False):
        return "attention biases"
    if getattr(config, "use_clipped_linears", False):
        return "clipped linears"
    if not getattr(config, "num_experts", 0) or not getattr(config, "top_k_experts", 0):
        return "no mixture of experts"
    if getattr(model, "final_logit_softcapping", None) is None:
        return "no final soft-capping"
    return None


Attend = Callable[[int, "_Layer", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _LeanStack:
    """The layers shared by both passes; `_run` takes how a layer's attention meets the cache."""

    def __init__(self, model: DiffusionGemmaForBlockDiffusion, part: Any):  # the decoder or the encoder's text model
        reason = supports(model)
        assert reason is None, f"the lean passes do not cover this model: {reason}"
        config = model.config.get_text_config()
        self.eps = float(config.rms_norm_eps)
        self.top_k = int(config.top_k_experts)
        self.hidden = int(config.hidden_size)
        self.embed: torch.Tensor = part.embed_tokens.weight
        self.embed_scale: torch.Tensor = part.embed_tokens.embed_scale.to(self.embed.dtype)
        self.rotary: Callable[..., tuple[torch.Tensor, torch.Tensor]] = part.rotary_emb
        self.layer_types = list(config.layer_types)
        self.window = int(config.sliding_window or 0)
        self.final_norm: torch.Tensor = part.norm.weight.float()
        self.layers = [_layer(layer) for layer in part.layers[: config.num_hidden_layers]]

    def _run(self, hidden: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        rope = {kind: self.rotary(hidden, positions, kind) for kind in set(self.layer_types)}
        for index, layer in enumerate(self.layers):
            hidden = self._layer(index, layer, hidden, rope[layer.layer_type], attend)
        return self._norm(hidden, self.final_norm)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        # transformers' RMSNorm: float32 math, the scale applied in float32, back to the input's dtype
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).type_as(x)

    def _layer(self, index: int, layer: _Layer, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
               attend: Attend) -> torch.Tensor:
        norms = layer.norms
        attended = self._attention(index, layer, self._norm(hidden, norms["input"]), rope, attend)
        hidden = hidden + self._norm(attended, norms["post_attention"])
        dense = self._norm(hidden, norms["pre_feedforward"])
        gate, up = F.linear(dense, layer.gate_up).chunk(2, dim=-1)
        dense = self._norm(F.linear(F.gelu(gate, approximate="tanh") * up, layer.down), norms["post_feedforward_1"])
        experts = self._norm(self._experts(layer, hidden), norms["post_feedforward_2"])
        hidden = hidden + self._norm(dense + experts, norms["post_feedforward"])
        return hidden * layer.layer_scalar

    def _attention(self, index: int, layer: _Layer, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                   attend: Attend) -> torch.Tensor:
        length = x.shape[1]
        projected = F.linear(x, layer.qkv)
        query = projected[..., : layer.q_size].view(1, length, layer.heads, layer.head_dim)
        key = projected[..., layer.q_size: layer.q_size + layer.kv_size].view(1, length, layer.kv_heads,
                                                                                layer.head_dim)
        value = projected[..., layer.q_size + layer.kv_size:].view(1, length, layer.kv_heads, layer.head_dim) \
            if layer.has_v else key
        cos, sin = (part.unsqueeze(2) for part in rope)
        query = _rotate(self._norm(query, layer.q_norm), cos, sin).transpose(1, 2)
        key = _rotate(self._norm(key, layer.k_norm), cos, sin).transpose(1, 2)
        value = self._norm(value, None).transpose(1, 2)
        out = attend(index, layer, query, key, value)
        return F.linear(out.transpose(1, 2).reshape(1, length, -1), layer.o_proj)

    def _experts(self, layer: _Layer, hidden: torch.Tensor) -> torch.Tensor:
        """Each token's top-k experts as the router weighs them: every expert computed densely, weighted 0 off the
        top-k."""
        flat = hidden.reshape(-1, self.hidden)
        routed = self._norm(flat, None) * layer.router_scale * self.hidden ** -0.5
        probabilities = torch.softmax(F.linear(routed, layer.router_proj), dim=-1, dtype=torch.float32)
        top_weights, top_index = torch.topk(probabilities, k=self.top_k, dim=-1)
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True) * layer.per_expert_scale[top_index]
        weights = torch.zeros_like(probabilities).scatter_(1, top_index, top_weights)  # [T, E]
        inputs = self._norm(flat, layer.norms["pre_feedforward_2"])
        gate, up = torch.matmul(inputs, layer.experts_gate_up.transpose(1, 2)).chunk(2, dim=-1)  # [E, T, I] each
        outputs = torch.matmul(F.gelu(gate, approximate="tanh") * up, layer.experts_down.transpose(1, 2))  # [E, T, H]
        mixed = torch.einsum("eth,te->th", outputs.float(), weights).to(hidden.dtype)
        return mixed.reshape(hidden.shape)


class LeanDecoder(_LeanStack):
    """One decoder step: raw logits for a canvas after what the cache holds, which it reads and never writes."""

    def __init__(self, model: DiffusionGemmaForBlockDiffusion):
        decoder = model.model.decoder
        super().__init__(model, decoder)
        sc = decoder.self_conditioning
        self.sc_pre = sc.pre_norm.weight.float()
        self.sc_gate_up = torch.cat([sc.gate_proj.weight, sc.up_proj.weight])
        self.sc_down = sc.down_proj.weight
        self.lm_head = model.lm_head.weight
        self.softcap = float(model.final_logit_softcapping)

    @torch.inference_mode()
    def __call__(self, cache: DynamicCache, canvas: torch.Tensor, self_conditioning: torch.Tensor | None,
                 positions: torch.Tensor) -> torch.Tensor:
        """Raw logits [1, L, V] for `canvas` [1, L] at `positions` [1, L]."""
        cached = list(dynamic_layers(cache))

        def attend(index: int, layer: _Layer, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor) -> torch.Tensor:
            held = cached[index]
            if held.keys is not None and held.values is not None:
                key, value = torch.cat([held.keys, key], dim=-2), torch.cat([held.values, value], dim=-2)
            return F.scaled_dot_product_attention(query, key, value, scale=1.0,
                                                  enable_gqa=layer.heads != layer.kv_heads)

        hidden = self._run(self._inputs(canvas, self_conditioning), positions, attend)
        logits = F.linear(hidden, self.lm_head).float()
        return torch.tanh(logits / self.softcap) * self.softcap

    def _inputs(self, canvas: torch.Tensor, self_conditioning: torch.Tensor | None) -> torch.Tensor:
        embeds = F.embedding(canvas, self.embed) * self.embed_scale
        if self_conditioning is None:  # a zero signal: the gated MLP of zeros adds zeros
            return self._norm(embeds, None)
        soft = torch.softmax(self_conditioning, dim=-1, dtype=torch.float32).to(self.embed.dtype) @ self.embed
        normed = self._norm(soft * self.embed_scale, self.sc_pre)
        gate, up = F.linear(normed, self.sc_gate_up).chunk(2, dim=-1)
        return self._norm(embeds + F.linear(F.gelu(gate, approximate="tanh") * up, self.sc_down), None)


class LeanEncoder(_LeanStack):
    """One causal encoder pass over a few tokens after what the cache holds, appending their K/V to it."""

    def __init__(self, model: DiffusionGemmaForBlockDiffusion):
        super().__init__(model, model.model.encoder.language_model)

    @torch.inference_mode()
    def __call__(self, cache: DynamicCache, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states [1, T, H] (after the final norm) for `token_ids` [1, T] at `positions` [1, T]."""
        length = token_ids.shape[1]
        first = int(positions[0, 0])

        def attend(index: int, layer: _Layer, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor) -> torch.Tensor:
            key, value = cache.update(key, value, index)
            mask = None
            if length > 1:  # one token sees all its layer holds; more see only what is before them (and in window)
                seen = torch.arange(first + length - key.shape[-2], first + length, device=key.device)[None]
                at = positions[0, :, None]
                mask = seen <= at
                if layer.layer_type == "sliding_attention" and self.window:
                    mask &= at - seen < self.window
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=1.0,
                                                  enable_gqa=layer.heads != layer.kv_heads)

        return self._run(F.embedding(token_ids, self.embed) * self.embed_scale, positions, attend)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _layer(layer: Any) -> _Layer:  # a decoder or encoder text layer (its attributes are untyped Modules)
    attention = layer.self_attn
    projections = [attention.q_proj.weight, attention.k_proj.weight]
    if attention.v_proj is not None:
        projections.append(attention.v_proj.weight)
    names = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
             "post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "pre_feedforward_layernorm_2")
    norms = {name.removesuffix("_layernorm").replace("_layernorm_", "_"): getattr(layer, name).weight.float()
             for name in names}
    return _Layer(
        qkv=torch.cat(projections), q_size=attention.q_proj.out_features, kv_size=attention.k_proj.out_features,
        has_v=attention.v_proj is not None, head_dim=attention.head_dim,
        heads=attention.q_proj.out_features // attention.head_dim,
        kv_heads=attention.k_proj.out_features // attention.head_dim, layer_type=attention.layer_type,
        q_norm=attention.q_norm.weight.float(), k_norm=attention.k_norm.weight.float(),
        o_proj=attention.o_proj.weight, norms=norms,
        gate_up=torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]), down=layer.mlp.down_proj.weight,
        router_proj=layer.router.proj.weight, router_scale=layer.router.scale,
        per_expert_scale=layer.router.per_expert_scale, experts_gate_up=layer.experts.gate_up_proj,
        experts_down=layer.experts.down_proj, layer_scalar=layer.layer_scalar,
    )
