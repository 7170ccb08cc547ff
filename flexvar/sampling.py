"""Classifier-free guidance and top-k / top-p sampling, as in the release.

Pure functions over logits; the step loop that calls them lives in the runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import SamplingError, as_integer

# sides on which the release samples with the user's top-k; elsewhere it is greedy
GRID_SIDES = frozenset({1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 24, 32})
GUIDANCE_RULES = ("ramp", "constant")


SEED_RANGE = (0, 2 ** 64 - 1)
# Guidance weights past this leave what the runtimes compute in: the fp16 runtime rounds a h_c - b h_u (a - b = 1,
# b up to cfg (n - 1) / 9 under the ramp) to fp16 (at most 65504), and at ~1e300 even float32 logits overflow.
# The release's values are 1-5.
MAX_CFG = 100.0


def check_seed(seed) -> int:
    """The seed as an int, or a SamplingError: an integer (Python's, NumPy's, a one-element integer tensor) within
    SEED_RANGE (what a torch.Generator takes, less its negative aliases)."""
    value = as_integer(seed)
    if value is None or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise SamplingError(f"seed must be an integer within 0 to 2**64 - 1, got {seed!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """Guidance and sampling settings of one generation (release defaults).

    top_k = 0 and top_p = 0 switch the filter off; top_k = 1 is greedy.
    greedy_off_grid: steps off the release's grid are sampled greedily (see `step_top_k`).
    """

    cfg: float = 2.5
    guidance: str = "ramp"
    top_k: int = 900
    top_p: float = 0.95
    max_pn: int = 16
    greedy_off_grid: bool = True

    def __post_init__(self):
        if isinstance(self.cfg, bool) or not isinstance(self.cfg, (int, float)) or not math.isfinite(self.cfg) \
                or not 0 <= self.cfg <= MAX_CFG:
            raise SamplingError(f"cfg must be a number from 0 to {MAX_CFG:g}, got {self.cfg}")
        if self.guidance not in GUIDANCE_RULES:
            raise SamplingError(f"guidance must be one of {', '.join(GUIDANCE_RULES)}, got {self.guidance!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 <= self.top_p <= 1.0:
            raise SamplingError(f"top_p must be within [0, 1] (0 = off), got {self.top_p}")
        if self.max_pn < 1:
            raise SamplingError(f"max_pn must be >= 1, got {self.max_pn}")


def guidance_weight(step: int, num_steps: int, hw: tuple[int, int], p: SamplingParams) -> float:
    """The weight t of step `step` (0-based) of an n-step schedule.

    ramp: t = cfg * step / min(n - 1, 9) while the step's longer side is <= max_pn, else cfg
    (a one-step schedule gets cfg: the end of the ramp). constant: t = cfg.
    Non-square steps are judged by their longer side.
    """
    if p.guidance == "constant":
        return float(p.cfg)
    if max(hw) > p.max_pn or num_steps == 1:
        return float(p.cfg)
    return p.cfg * step / min(num_steps - 1, 9)


def guide(logits_2BlV: torch.Tensor, t: float, rule: str) -> torch.Tensor:
    """Combine [conditional; unconditional] logits.

    ramp: (1 + t) * cond - t * uncond.  constant: uncond + t * (cond - uncond).
    """
    cond, uncond = logits_2BlV.chunk(2, dim=0)
    if rule == "ramp":
        return (1 + t) * cond - t * uncond
    return uncond + t * (cond - uncond)


def step_top_k(hw: tuple[int, int], p: SamplingParams) -> int:
    """The release samples a step greedily (top_k = 1) if a side is above max_pn or off GRID_SIDES.

    For non-square steps both sides must be on the grid and within max_pn to keep the user's top-k.
    """
    off_grid = max(hw) > p.max_pn or hw[0] not in GRID_SIDES or hw[1] not in GRID_SIDES
    return 1 if (p.greedy_off_grid and off_grid) else p.top_k


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf, in place) what top-k and then top-p drop.

    top-k keeps logits >= the k-th largest; top-p sorts ascending and drops the tokens whose
    cumulative probability is <= 1 - top_p, always keeping the most likely one.
    """
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth = logits_BlV.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        logits_BlV.masked_fill_(drop.scatter(-1, sorted_idx, drop), float("-inf"))
    return logits_BlV


def sample(logits_BlV: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One multinomial draw per token from softmax(filtered logits): (B, l, V) -> (B, l) int64.

    The draw is made even when top_k = 1 (it then returns the argmax), so the random stream
    advances exactly as in the release.
    """
    B, l, V = logits_BlV.shape
    probs = filter_top_k_top_p_(logits_BlV.float().clone(), top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs.view(-1, V), num_samples=1, replacement=True, generator=generator).view(B, l)
