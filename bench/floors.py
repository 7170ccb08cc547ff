"""Lower bounds of the fast runtime's work per step, to read a profile against (`profile_fast --floors`).

Per step of one generation of B images (2B rows in the transformer: guidance), in the runtime's dtypes (fp16/bf16
activations and weights, the float32 residual stream, float32 guided logits):
  - gemm_flop: the blocks' four GEMMs (qkv, projection, fc1, fc2) on 2B rows and the head on B rows (guidance is
    applied to its input); at the first step with the first-step table, none, or only the head's where the table does
    not hold its logits (`table_logits`: the float32 table of fp16/bf16 runtimes does). The per-label modulation is
    once per label set, not per step, and is left out. Its time floor is gemm_flop at the matmul ceiling.
  - attention_bytes: per block, the step's qkv read once, its keys and values written into the cache (not at the
    last step unless last_step_kv), every earlier token's keys and values read once per (row, head), the output
    written once; attention_flop: the two products (q k^T and p v) over every key, 4 rows L C a block (L the keys),
    and attention_exp: the softmax's exponentials, rows H L a block. Attention's time floor is the larger of its
    bytes at the copy bandwidth and its products at the matmul ceiling (the exponentials run on the SFUs beside).
  - ln_bytes: per block, two residual + LayerNorm passes (after the projection and after fc2): the float32
    residual read and written, the GEMM's output read and the next GEMM's normalised input written.
  - sample_bytes: the guided float32 logits read once.
Their time floors are the bytes at the copy bandwidth (kernels that find their input still in L2, such as the
LayerNorm passes reading a GEMM's output, can beat them). The numbers are what any implementation of this algorithm
must move or compute, not what this one does; the distance between the two is where time can still be won.
"""
from __future__ import annotations

from flexvar.config import FlexVARConfig
from flexvar.schedule import Schedule

ACT, RES, LOGIT = 2, 4, 4  # bytes of an activation (fp16/bf16), of the residual stream, of a logit


def step_floors(cfg: FlexVARConfig, schedule: Schedule, batch: int, first_step_table: bool = True,
                last_step_kv: bool = False, table_logits: bool = True) -> list[dict[str, int]]:
    """One dict per step: gemm_flop, attention_bytes, attention_flop, attention_exp, ln_bytes, sample_bytes (see
    the module's docstring)."""
    C, D, hidden, V = cfg.width, cfg.depth, cfg.mlp_hidden, cfg.vocab_size
    out = []
    for i, ((h, w), start) in enumerate(zip(schedule.steps, schedule.offsets)):
        n = h * w  # the step's tokens
        rows = 2 * batch * n
        sample = batch * n * V * LOGIT
        head = batch * n * 2 * C * V
        if first_step_table and i == 0:  # keys and values (and logits) gathered from the table
            out.append({"gemm_flop": 0 if table_logits else head, "attention_bytes": 0, "attention_flop": 0,
                        "attention_exp": 0, "ln_bytes": 0, "sample_bytes": sample})
            continue
        writes_kv = last_step_kv or i < len(schedule) - 1
        out.append({
            "gemm_flop": D * rows * 2 * C * (3 * C + C + 2 * hidden) + head,
            "attention_bytes": D * ACT * (rows * 3 * C + (rows * 2 * C if writes_kv else 0)
                                          + 2 * batch * start * 2 * C + rows * C),
            "attention_flop": D * 4 * rows * (start + n) * C,
            "attention_exp": D * rows * cfg.heads * (start + n),
            "ln_bytes": D * 2 * rows * C * (2 * RES + 2 * ACT),
            "sample_bytes": sample,
        })
    return out
