"""The step loop over a schedule: free functions over explicit models and inputs.

`generate_codes` is the reference inference path (KV-cached, one step's tokens at a
time). `teacher_forced_logits` runs the same cached steps on given codes;
`full_sequence_logits` runs one masked pass over the whole sequence (the oracle).
"""
from __future__ import annotations

import torch

from .kv_cache import KVCache
from .model import FlexVAR
from .sampling import SamplingParams, guidance_weight, guide, sample, step_top_k
from .schedule import Schedule
from .vqvae import Codebook


def step_tokens(model: FlexVAR, codebook: Codebook, cond_BC: torch.Tensor, prev_Bhw: torch.Tensor | None,
                hw: tuple[int, int]) -> torch.Tensor:
    """Input tokens of a step (B, h*w, C): from cond at the first step, else from the previous codes."""
    if prev_Bhw is None:
        return model.first_tokens(cond_BC, *hw)
    vec = codebook.lookup(prev_Bhw).to(cond_BC.dtype)
    return model.next_tokens(vec, *hw)


@torch.no_grad()
def generate_codes(model: FlexVAR, codebook: Codebook, labels_B: torch.Tensor, schedule: Schedule,
                   params: SamplingParams, generator: torch.Generator | None,
                   forced: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Codes (B, h, w) of every step, with classifier-free guidance.

    The batch runs as [conditional; unconditional] (2B rows). `forced`, if given, holds per step
    (codes_Bhw, keep_Bhw): where keep is True the step's codes are set to the given ones after
    sampling (teacher forcing for image-to-image).
    """
    cfg = model.cfg
    B = labels_B.shape[0]
    dtype = model.pos_1LC.dtype
    labels_2B = torch.cat([labels_B, torch.full_like(labels_B, cfg.null_class)])
    cond, blocks, head = model.modulation(labels_2B)
    cache = KVCache(cfg.depth, schedule.total_tokens, 2 * B, cfg.heads, cfg.head_dim, dtype, labels_B.device)
    codes: list[torch.Tensor] = []
    for si, hw in enumerate(schedule):
        if si == 0:
            x = step_tokens(model, codebook, cond, None, hw)
        else:  # both halves see the same tokens from the guided codes
            x = step_tokens(model, codebook, cond, codes[-1], hw).repeat(2, 1, 1)
        logits = model.forward_step(x, blocks, head, cache, schedule.offsets[si])
        codes.append(sample_step(logits, si, schedule, params, generator, forced))
    return codes


def sample_step(logits_2BlV: torch.Tensor, si: int, schedule: Schedule, params: SamplingParams,
                generator: torch.Generator | None, forced=None) -> torch.Tensor:
    """Step si's codes (B, h, w) from [cond; uncond] logits: guidance, the step's top-k (greedy off the
    grid), top-p, one draw; then the forced codes where `forced[si]` keeps them."""
    hw = schedule.steps[si]
    logits = guide(logits_2BlV, guidance_weight(si, len(schedule), hw, params), params.guidance)
    idx = sample(logits, step_top_k(hw, params), params.top_p, generator).view(-1, *hw)
    if forced is not None:
        want, keep = forced[si]
        idx = torch.where(keep, want, idx)
    return idx


@torch.no_grad()
def teacher_forced_logits(model: FlexVAR, codebook: Codebook, labels_B: torch.Tensor,
                          codes: list[torch.Tensor], schedule: Schedule) -> list[torch.Tensor]:
    """Logits (B, h*w, V) of every step given the codes of the earlier ones, no guidance, KV-cached."""
    cfg = model.cfg
    B = labels_B.shape[0]
    cond, blocks, head = model.modulation(labels_B)
    cache = KVCache(cfg.depth, schedule.total_tokens, B, cfg.heads, cfg.head_dim, model.pos_1LC.dtype,
                    labels_B.device)
    out = []
    for si, hw in enumerate(schedule):
        x = step_tokens(model, codebook, cond, codes[si - 1] if si else None, hw)
        out.append(model.forward_step(x, blocks, head, cache, schedule.offsets[si]))
    return out


@torch.no_grad()
def full_sequence_logits(model: FlexVAR, codebook: Codebook, labels_B: torch.Tensor,
                         codes: list[torch.Tensor], schedule: Schedule) -> list[torch.Tensor]:
    """The same logits from one pass over all steps with the block-causal mask (the oracle)."""
    cond = model.class_emb(labels_B)
    x = torch.cat([step_tokens(model, codebook, cond, codes[si - 1] if si else None, hw)
                   for si, hw in enumerate(schedule)], dim=1)
    logits = model(x, labels_B, list(schedule.token_counts))
    return list(logits.split(list(schedule.token_counts), dim=1))
