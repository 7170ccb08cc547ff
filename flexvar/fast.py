"""The fast runtime: the same models, with everything that can be done once done once.

Per model: the codebook projected through word_embed, (V, C), so a step's input tokens are
bicubic-resized projected codes + bias + positions (word_embed is linear and bicubic weights
sum to one). Per model and first scale, on CUDA: the first step of every label, null class included
(`FastRuntime.first_step`): its input depends on the label alone, so a generation copies its keys,
values and last block output out of a table instead of running it; in fp16/bf16 the table is computed in
float32 and keeps each label's float32 head output, so step 1 is sampled from float32 logits. Per label
set: every block's modulation and the head's (cached). Per schedule: the positions of every step. Per
(schedule, batch, sampling parameters): static buffers, a
preallocated KV cache and, on CUDA, one CUDA graph of the whole generation (all steps,
guidance, sampling, decode) that is replayed afterwards.

Steps of few token rows (batch 1's first steps) run every block in one cooperative kernel
(`flexvar.kernels.small_step`); the others run each block as compiled halves around one attention
kernel (`flexvar.kernels.attention.attend_step`: q/k norms, the cache write and attention over the
cache), or in float32 `qk_norm_cache` + SDPA on the cache's views (`FastRuntime.transformer`). In fp16/bf16 their
GEMMs that are not split-K run through `flexvar.kernels.lt_linear`: cuBLASLt with each shape's algorithm tuned when a
plan is built (`gemm_shapes`), saved per machine so that later processes compute alike.

The decoder on CUDA is a copy sharing the tokenizer's parameters (`fast_decoder`) whose attention blocks are two
batched products and a float32 softmax (`product_attention`), whose upsamplings are transposed convolutions with
folded filters (`FoldedUpsample`), and, from `group_norm_min_batch` images on, whose GroupNorms are the
`group_norm_silu` op, which also adds the convolution biases and residual sums before it (`ResidualGroupNorm`).

Guidance is applied to the head's input (`guided_head_input`: the head is linear and the two guidance
weights sum to one), so the head runs on one row per token instead of two and the logits are already
guided. Top-k, top-p and the draw are one op (`flexvar.kernels.guided_sample` with rule "none": one CUDA
kernel, or its PyTorch reference): the uniform of each token is a counter-based hash of (seed, step, token)
read from device memory, so a replay needs no host synchronisation and a seed gives the same draws
on every device (the hash takes a 32-bit word: `seed_word` folds a 64-bit seed into it, leaving seeds below
2**32 as they are). Its codes therefore differ from the reference runtime's `torch.multinomial` stream
for non-greedy sampling (same distribution); greedy codes are identical.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from .images import pixels_uint8
from .fast_decoder import (UPSAMPLE_MODES, ResidualGroupNorm, product_attention,  # noqa: F401
                           with_folded_upsample, with_group_norm_op, with_product_attention)
from .fast_step import (_has_mm_out_dtype, attend, bicubic_taps, fc1_gelu, finish_qkv, finish_step,  # noqa: F401
                        guidance_coefficients, guided_head_input, head_input, qkv_proj, qkv_step)
from .kernels import attention as _attention
from .kernels import lt_linear as _lt
from .kernels import skinny_mm as _skinny_mm
from .kernels import guided_sample, mix32, next_tokens, qk_norm_cache, small_step, small_step_fits
from .kernels import load as load_kernels
from .kv_cache import KVCache
from .model import FlexVAR
from .sampling import SamplingParams, step_top_k
from .schedule import Schedule
from .vqvae import VQVAE

_M32 = 0xFFFFFFFF


def seed_word(seed: int) -> int:
    """A seed (taken modulo 2**64) as the 32-bit word the sampling hash reads: its low word XOR a hash of its
    high word, which is 0 for seeds below 2**32 (they are their own word), so that seeds that differ only above
    bit 32 draw differently."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    return (s & _M32) ^ mix32(s >> 32)


@contextmanager
def _full_float32():
    """float32 matmuls in full float32 (no TF32, which a caller may have turned on) inside, restored after."""
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(was)


def float32_copy(model: FlexVAR) -> FlexVAR:
    """A float32 copy of the model on its device (its parameters and buffers upcast; the original is untouched)."""
    with torch.device("meta"):
        m32 = type(model)(model.cfg)
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()}, assign=True)
    return m32.eval()


def first_step_options(device: torch.device, dtype: torch.dtype, first_step_table: bool | None = None,
                       first_step_float32: bool | None = None) -> tuple[bool, bool]:
    """`FastRuntime`'s (first_step_table, first_step_float32) for these arguments, defaults resolved: the table on
    CUDA, built in float32 for fp16/bf16 runtimes."""
    table = device.type == "cuda" if first_step_table is None else bool(first_step_table)
    float32 = dtype in (torch.float16, torch.bfloat16) if first_step_float32 is None else bool(first_step_float32)
    return table, float32


def build_first_step_table(model32: FlexVAR, hw: tuple[int, int], kv_dtype: torch.dtype) -> tuple:
    """The first step of every label (null class included) at first scale hw through a float32 model's own
    step (`model.Block.forward_step`), in full float32: keys and values (depth, 2, h*w, N, H, d) rounded once to
    kv_dtype, the last block's output (N, h*w, C) and the head's output, its bias included (N, h*w, V), float32;
    N = num_classes + 1 (`FastRuntime.first_step`'s table with `first_step_float32`)."""
    cfg, n = model32.cfg, hw[0] * hw[1]
    N, chunk = cfg.num_classes + 1, max(1, 512 // n)
    dev = model32.pos_start.device
    kv = torch.empty(cfg.depth, 2, n, N, cfg.heads, cfg.head_dim, dtype=kv_dtype, device=dev)
    x_NlC = torch.empty(N, n, cfg.width, dtype=torch.float32, device=dev)
    head_NlV = torch.empty(N, n, cfg.vocab_size, dtype=torch.float32, device=dev)
    with torch.no_grad(), _full_float32():
        for a in range(0, N, chunk):
            labels = torch.arange(a, min(a + chunk, N), device=dev)
            span = slice(a, a + len(labels))
            cache = KVCache(cfg.depth, n, len(labels), cfg.heads, cfg.head_dim, torch.float32, dev)
            cond, blocks, head = model32.modulation(labels)
            x = model32.first_tokens(cond, *hw)
            for i, blk in enumerate(model32.blocks):
                x = blk.forward_step(x, blocks[i], cache, i, 0)
            x_NlC[span] = x
            head_NlV[span] = model32.logits(x, head)
            kv[:, :, :, span] = cache.kv
    return kv, x_NlC, head_NlV


def _no_stage(name):
    return nullcontext()



@dataclass
class _Plan:
    """Static buffers (and graph) of one (schedule, batch, parameters) combination."""

    schedule: Schedule
    B: int
    params: SamplingParams
    decode: bool
    labels: torch.Tensor  # (2B,) int64: the labels, then the null class B times
    cond: torch.Tensor  # (2B, C)
    blocks: torch.Tensor  # (depth, 2B, 6, C)
    head: torch.Tensor  # (2B, 2, C)
    seed: torch.Tensor  # (1,) int64
    coef: torch.Tensor  # (steps, 2) float32: each step's guidance coefficients (`guidance_coefficients`)
    cache: KVCache
    codes: list  # (B, h, w) int64 per step
    image: torch.Tensor | None  # (B, H, W, 3) uint8
    forced: list | None = None  # per step (codes (B, h, w) int64, keep (B, h, w) bool), image-to-image
    first: tuple | None = None  # `FastRuntime.first_step` of the first scale (held while a graph reads it)
    graph: object = None


class FastRuntime:
    """Generation for one (model, tokenizer) on one device. Not thread-safe: one generation at a time."""

    def __init__(self, model: FlexVAR, vae: VQVAE, use_graphs: bool | None = None, use_kernels: bool = True,
                 compile_blocks: bool | None = None, channels_last: bool | None = None,
                 compile_decoder: bool | None = None, fused_small_steps: bool | None = None,
                 small_step_rows: int | None = None, tune: tuple[str, ...] = (), attention: str | None = None,
                 group_norm_op: bool | None = None, group_norm_min_batch: int = 8, max_plans: int = 8,
                 max_label_sets: int = 64, first_step_table: bool | None = None,
                 first_step_max_bytes: int = 512 << 20, skinny_rows: int | None = None,
                 lt_gemms: bool | None = None, upsample: str | None = None,
                 group_norm_fuse: bool = True, conv_out_taps: bool = True,
                 kv_head_major_min_batch: int | None = None, last_step_kv: bool = False,
                 first_step_float32: bool | None = None, first_step_tables: dict | None = None):
        """Defaults on CUDA: CUDA graphs, the fused kernels, the block halves compiled by Inductor with
        dynamic shapes (once per process), the channels-last decoder compiled per output shape, and
        steps of at most `small_step_rows` token rows (guidance included) as one `small_step` kernel: by
        default 8 up to width 1,024 (d16: batch 1's first two steps, of which the first comes from the table;
        the best of 2/8/32/none on the H100 since the per-block path's Triton attention) and 2 above (d24: step 2
        runs the per-block path, with its tuned GEMMs and split-K, 14.83 / 14.79 ms against 15.21 / 14.90 in
        session 17's A/B).
        On CPU: none of them (fused_small_steps=True runs `small_step`'s reference there, for tests).
        tune: "blocks" and/or "decoder": Inductor's coordinate-descent tuning of those kernels' launch
        configurations (longer first compile; on the H100 neither is faster with the GroupNorm op on).
        attention: the per-block path's attention in fp16/bf16 (float32 always takes `qk_norm_cache` +
        SDPA): "step" (default on CUDA with the kernels on) = `flexvar.kernels.attention.attend_step`,
        one Triton kernel that also does `qk_norm_cache`'s work; "triton" = `qk_norm_cache` + the Triton
        `attend`; "sdpa" (default otherwise) = `qk_norm_cache` + SDPA.
        group_norm_op: for decodes of at least `group_norm_min_batch` images, the decoder's GroupNorms
        (+ SiLU) as the `group_norm_silu` op (Triton kernels; default on CUDA with the kernels on, in fp16/bf16: the
        kernels' dtypes; a float32 runtime decodes through Inductor's GroupNorms)
        instead of what Inductor generates for them (faster at batch 32, slower at batch 1 on the H100).
        first_step_table (default on CUDA): the first step of every label read from a table built once per
        first scale (`first_step`), where it takes at most `first_step_max_bytes` of device memory.
        first_step_float32 (default where the runtime runs in fp16/bf16): that table is computed in float32 (the
        reference model's step on a float32 copy of the weights, made for the build and freed after: 1.2 GB at d16)
        and also holds each label's float32 head output (N x h*w x V floats: 35.7 MB at V 8,912 for 1,001 labels at
        1x1), from which step 1's guided logits are formed (`first_step_logits`): step 1, computed once per label,
        then differs from float32 only by the weights' rounding (bf16 step-1 code agreement over the 1,000 classes:
        98.0 % -> 99.3 % on the CPU; 98.8 % on the H100, with the GPU's own random weights).
        first_step_tables: {first scale: table} built before the model was cast to this runtime's dtype
        (`build_first_step_table` on the checkpoint's float32 weights, which `Pipeline` does for the 1x1 first scale),
        used instead of building those (kept for the runtime's life); step 1 then has no rounding at all.
        skinny_rows: per-block steps of at most this many token rows (guidance included) run each block's
        projection and fc2 as `flexvar.kernels.skinny_mm.skinny_partials` (split-K partial products summed in
        the compiled kernel after them) instead of cuBLAS: on CUDA only where the Triton kernel runs (fp16/bf16,
        kernels on, widths it tiles), at most 128; default 128 (batch 1's steps 3-7) up to width 1,024 (d16), 32
        (steps 3-4) above: the best measured on the H100 (d16 8.22 -> 8.03 ms at 128, d24 level or slower than
        32); on CPU (the op's reference, for tests) only when asked for. 0: never.
        lt_gemms (default on CUDA in fp16/bf16 with the kernels on, where the cuBLASLt extension builds): the
        per-block steps' GEMMs that are not split-K as `flexvar.kernels.lt_linear` (cuBLASLt, bias or GELU + bias
        epilogue as before), each shape's algorithm tuned once when a plan is built (`gemm_shapes`, `lt_linear.tune`)
        instead of the heuristic's first; on CPU (the op's reference, for tests) only when asked for.
        upsample: how the decoder's nearest x2 + 3x3 convolutions run (`fast_decoder.with_folded_upsample`):
        "nearest" as written (default on CPU and with the kernels off) or "transpose" (filters folded once into a
        stride-2 transposed convolution: 16 multiply-adds per input pixel instead of 36; default on CUDA).
        group_norm_fuse: with the GroupNorm op, the bias of the convolution before each GroupNorm and each
        residual sum that a GroupNorm normalises next are added by that GroupNorm's kernels
        (`fast_decoder.ResidualGroupNorm`) instead of in passes of their own.
        conv_out_taps: with group_norm_fuse, the decoder's end (norm_out, swish, conv_out) as the GroupNorm kernels
        writing each pixel's conv_out partial products, summed over neighbours after
        (`kernels.group_norm.group_norm_silu_taps`), instead of the normalised tensor and cuDNN's convolution.
        kv_head_major_min_batch: generations of at least this many images keep their KV cache head-major
        (`KVCache(head_major=True)`: each (image, head)'s keys in one contiguous run, which `attend_step` reads
        through its strides, instead of 128-byte rows 2B x H x d apart); such steps never run `small_step`, whose
        kernel takes the token-major cache. None (default): never (the H100 measured no gain at batch 32, session 25:
        -0.09 / +0.02 ms against the token-major cache).
        last_step_kv: whether a generation's last step writes its keys and values into the KV cache. No later step
        reads them and `attend_step` takes a step's own keys from its qkv, so by default (False) it skips those
        writes (at batch 32, 256-10, 67 MB a block); the codes and images are the same either way."""
        if attention not in (None, "step", "triton", "sdpa"):
            raise ValueError(f"attention takes 'step', 'triton' or 'sdpa', not {attention!r}")
        unknown = set(tune) - {"blocks", "decoder"}
        if unknown:
            raise ValueError(f"tune takes 'blocks' and/or 'decoder', not {sorted(unknown)}")
        self.model, self.vae = model, vae
        p = model.pos_1LC
        self.device, self.dtype = p.device, p.dtype
        cuda = self.device.type == "cuda"
        self.use_graphs = cuda if use_graphs is None else use_graphs
        self.use_kernels = use_kernels
        self.fused_small_steps = cuda and use_kernels if fused_small_steps is None else fused_small_steps
        if small_step_rows is None:
            small_step_rows = 8 if model.cfg.width <= 1024 else 2
        self.small_step_rows = small_step_rows  # steps of at most this many rows (guidance included) fused
        self.attention = attention or ("step" if cuda and use_kernels else "sdpa")
        self.channels_last = cuda if channels_last is None else channels_last
        with torch.no_grad():
            book = vae.quantize.normalized().float()
            self.proj_VC = (book @ model.word_embed.weight.float().t()).to(self.dtype).contiguous()
            self.head_w = model.head.weight.contiguous()
            self.head_b = model.head.bias.float()
            self.block_weights = [self._weights(b) for b in model.blocks]
            # small_step's nine per-block lists: wqkv, bqkv, q scale (H), wproj, bproj, w1, b1, w2, b2
            self.step_weights = tuple(list(ws) for ws in zip(*(
                (w[0], w[1], w[2].reshape(-1).contiguous(), *w[3:]) for w in self.block_weights)))
        self.qkv_proj, self.finish_qkv, self.finish_step = qkv_proj, finish_qkv, finish_step
        self.head_input, self.guided_head_input = head_input, guided_head_input
        if cuda if compile_blocks is None else compile_blocks:  # dynamic in the step's tokens and start
            opts = {"coordinate_descent_tuning": True} if "blocks" in tune else None
            self.head_input = torch.compile(head_input, dynamic=True)
            self.guided_head_input = torch.compile(guided_head_input, dynamic=True)
            self.qkv_proj = torch.compile(qkv_proj, dynamic=True, options=opts)
            self.finish_qkv = torch.compile(finish_qkv, dynamic=True, options=opts)
            self.finish_step = torch.compile(finish_step, dynamic=True, options=opts)
        if upsample is not None and upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample takes one of {', '.join(UPSAMPLE_MODES)}, not {upsample!r}")
        self.upsample = upsample or ("transpose" if cuda and use_kernels else "nearest")
        self.decoder = with_folded_upsample(vae.decoder, self.upsample)
        self.decoder = with_product_attention(self.decoder) if cuda and use_kernels else self.decoder
        if self.channels_last:
            self.decoder = self.decoder.to(memory_format=torch.channels_last)
        # the GroupNorm kernels take fp16/bf16 only: in float32 the op would run its reference on every call
        half_decoder = next(vae.decoder.parameters()).dtype in (torch.float16, torch.bfloat16)
        use_gn_op = cuda and use_kernels and half_decoder if group_norm_op is None else group_norm_op
        self.decoder_gn = None  # a copy with the GroupNorm op, same parameters
        if use_gn_op:
            self.decoder_gn = (ResidualGroupNorm(self.decoder, conv_out_taps) if group_norm_fuse
                               else with_group_norm_op(self.decoder))
        self.group_norm_min_batch = group_norm_min_batch
        if kv_head_major_min_batch is not None and kv_head_major_min_batch < 1:
            raise ValueError(f"kv_head_major_min_batch takes None or a batch size of at least 1, "
                             f"not {kv_head_major_min_batch}")
        self.kv_head_major_min_batch = kv_head_major_min_batch
        self.last_step_kv = last_step_kv
        if cuda if compile_decoder is None else compile_decoder:
            # static shapes: Inductor's channels-last conv layouts and fused GroupNorm+SiLU need them;
            # one compile per output shape, paid when a plan is first built
            import torch._dynamo as dynamo
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            opts = {"coordinate_descent_tuning": True} if "decoder" in tune else None
            self.decoder = torch.compile(self.decoder, dynamic=False, options=opts)
            if self.decoder_gn is not None:
                self.decoder_gn = torch.compile(self.decoder_gn, dynamic=False, options=opts)
        self._mm_fp32_out = self.device.type == "cuda" and self.dtype != torch.float32 and _has_mm_out_dtype(self.device)
        cfg = model.cfg
        self.skinny_splits = (_skinny_mm.splits_for(cfg.width, cfg.width), _skinny_mm.splits_for(cfg.width, cfg.mlp_hidden))
        kernel = (use_kernels and self.dtype in (torch.float16, torch.bfloat16) and _skinny_mm.triton is not None
                  and 0 not in self.skinny_splits)
        if cuda:  # only where the Triton kernel runs, and within its row limit
            default = 128 if cfg.width <= 1024 else 32
            self.skinny_rows = min(default if skinny_rows is None else skinny_rows, _skinny_mm.MAX_ROWS) if kernel else 0
        else:  # the op's reference, for tests
            self.skinny_rows = 0 if skinny_rows is None or 0 in self.skinny_splits else skinny_rows
        low = self.dtype in (torch.float16, torch.bfloat16)
        want_lt = cuda and use_kernels and low if lt_gemms is None else lt_gemms
        self.lt_gemms = bool(want_lt) and (not cuda or (low and _lt.available(self.device, self.dtype)))
        self.first_step_table, self.first_step_float32 = first_step_options(self.device, self.dtype, first_step_table,
                                                                            first_step_float32)
        self.first_step_max_bytes = first_step_max_bytes
        self._first: OrderedDict = OrderedDict()  # first scale -> table or None (LRU of 4; plans hold theirs)
        self._pinned = dict(first_step_tables or {})
        for hw, table in self._pinned.items():
            kv, x_NlC, head_NlV = table
            want = (cfg.depth, 2, hw[0] * hw[1], cfg.num_classes + 1, cfg.heads, cfg.head_dim)
            if (tuple(kv.shape) != want or kv.dtype != self.dtype or kv.device != self.device
                    or tuple(x_NlC.shape) != (want[3], want[2], cfg.width) or head_NlV is None
                    or tuple(head_NlV.shape) != (want[3], want[2], cfg.vocab_size)):
                raise ValueError(f"first_step_tables[{hw}] does not fit this model, dtype and device")
        self._pos: dict[tuple[int, int], torch.Tensor] = {}
        self._taps: dict[tuple, tuple] = {}
        self._mods: OrderedDict = OrderedDict()
        self._plans: OrderedDict = OrderedDict()
        self.max_plans, self.max_label_sets = max_plans, max_label_sets

    @staticmethod
    def _weights(blk) -> tuple:
        """A block's weights as plain tensors: wqkv, bqkv (q, 0, v), the q scale (exp of the clamped
        log scale, (H, 1)), then the second half's."""
        a = blk.attn
        bqkv = torch.cat((a.q_bias, a.zero_k_bias, a.v_bias))
        scale = a.scale_mul_1H11.float().clamp_max(a.max_log_scale).exp().view(a.H, 1)
        return (a.mat_qkv.weight, bqkv, scale, a.proj.weight, a.proj.bias, blk.ffn.fc1.weight, blk.ffn.fc1.bias,
                blk.ffn.fc2.weight, blk.ffn.fc2.bias)

    def decode(self, codes_Bhw: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) images on the device."""
        z = self.vae.post_quant_conv(self.vae.quantize.lookup(codes_Bhw))
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        gn = self.decoder_gn is not None and z.shape[0] >= self.group_norm_min_batch
        img = (self.decoder_gn if gn else self.decoder)(z)
        return pixels_uint8(img)

    # ---- cached per shape / per label set -------------------------------------------------
    def positions(self, hw: tuple[int, int]) -> torch.Tensor:
        """(h*w, C) positions of a step, computed once per shape."""
        if hw not in self._pos:
            with torch.no_grad():
                self._pos[hw] = self.model.positions(*hw).contiguous()
        return self._pos[hw]

    def first_step_bytes(self, hw: tuple[int, int]) -> int:
        """Device memory of `first_step`'s table for a first scale hw."""
        cfg = self.model.cfg
        per_token = 2 * cfg.depth * cfg.width * self.dtype.itemsize + 4 * cfg.width  # keys and values; float32 x
        per_token += 4 * cfg.vocab_size if self.first_step_float32 else 0  # float32 head output
        return (cfg.num_classes + 1) * hw[0] * hw[1] * per_token

    def first_step(self, hw: tuple[int, int]) -> tuple | None:
        """The first step of every label (null class included) at first scale hw, computed once: keys and
        values (depth, 2, h*w, N, H, d) in the cache's layout, the last block's output (N, h*w, C)
        float32, N = num_classes + 1, and, with `first_step_float32`, the head's output with its bias
        (N, h*w, V) float32 (else None). The step's input is the label's class embedding + positions, so its
        keys, values and output depend on the label alone. None where the table is off or would take more
        than `first_step_max_bytes`."""
        if self.first_step_table and hw in self._pinned:
            return self._pinned[hw]
        if hw in self._first:
            self._first.move_to_end(hw)
            return self._first[hw]
        table = None
        if self.first_step_table and self.first_step_bytes(hw) <= self.first_step_max_bytes:
            if self.first_step_float32:
                table = build_first_step_table(float32_copy(self.model), hw, self.dtype)
            else:
                cfg, l = self.model.cfg, hw[0] * hw[1]
                N, chunk = cfg.num_classes + 1, max(1, 512 // l)
                kv = torch.empty(cfg.depth, 2, l, N, cfg.heads, cfg.head_dim, dtype=self.dtype, device=self.device)
                x_NlC = torch.empty(N, l, cfg.width, dtype=torch.float32, device=self.device)
                with torch.no_grad():
                    for a in range(0, N, chunk):
                        labels = torch.arange(a, min(a + chunk, N), device=self.device)
                        cache = KVCache(cfg.depth, l, len(labels), cfg.heads, cfg.head_dim, self.dtype, self.device)
                        cond, blocks, _ = self.model.modulation(labels)
                        x_NlC[a:a + len(labels)] = self.transformer(self._first_tokens(cond, hw), blocks, cache.kv, 0)
                        kv[:, :, :, a:a + len(labels)] = cache.kv
                table = (kv, x_NlC, None)
        self._first[hw] = table
        if len(self._first) > 4:
            self._first.popitem(last=False)
        return table

    def first_step_rows(self, table: tuple | None, hw: tuple[int, int], labels_2B: torch.Tensor,
                        cond_2BC: torch.Tensor, blocks: torch.Tensor, kv: torch.Tensor,
                        rows: bool = True) -> torch.Tensor | None:
        """The first step of a label set (labels (2B,) int64 on the device, their cond and block modulation):
        writes its keys and values into kv at [0, h*w) and returns the last block's output (2B, h*w, C)
        float32; copied out of `table` (`first_step(hw)`), or computed where it is None. rows=False, with a
        table: the keys and values only, None returned (the caller takes step 1's logits from
        `first_step_logits`, so the rows would go unused)."""
        if table is None:
            return self.transformer(self._first_tokens(cond_2BC, hw), blocks, kv, 0)
        kv_t, x_NlC, _ = table
        kv[:, :, :kv_t.shape[2]].copy_(kv_t.index_select(3, labels_2B))
        return x_NlC.index_select(0, labels_2B) if rows else None

    def first_step_logits(self, table: tuple | None, labels_2B: torch.Tensor, coef_2: torch.Tensor,
                          bias: bool = True) -> torch.Tensor | None:
        """Guided float32 logits (B, h*w, V) of the first step from the table's float32 head outputs
        (a L[label] - b L[null], the step's `guidance_coefficients`; a - b = 1, so the table's bias comes through
        once), as `guided_logits` forms them from the last block's output; bias=False subtracts this runtime's
        head bias (which the sampling adds back). None where the table has none (off, or not
        `first_step_float32`)."""
        if table is None or table[2] is None:
            return None
        cond, uncond = table[2].index_select(0, labels_2B).chunk(2, dim=0)
        out = coef_2[0] * cond - coef_2[1] * uncond
        return out if bias else out - self.head_b

    def _first_tokens(self, cond_BC: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, C) float32 input of the first step."""
        return cond_BC[:, None].float() + self.model.pos_start.float() + self.positions(hw)[None].float()

    def modulation(self, labels_2B: tuple[int, ...]):
        """(cond, blocks, head) of a label set, computed once (LRU)."""
        return self.label_set(labels_2B)[1:]

    def label_set(self, labels_2B: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """(labels (2B,) int64 on the device, cond, blocks, head) of a label set, computed once (LRU of
        `max_label_sets`): a generation copies them into its plan without building anything on the host."""
        if labels_2B in self._mods:
            self._mods.move_to_end(labels_2B)
            return self._mods[labels_2B]
        labels = torch.tensor(labels_2B, device=self.device)
        with torch.no_grad():
            entry = (labels, *self.model.modulation(labels))
        self._mods[labels_2B] = entry
        if len(self._mods) > self.max_label_sets:
            self._mods.popitem(last=False)
        return entry

    # ---- one step's pieces ---------------------------------------------------------------------
    def next_tokens(self, prev_Bhw: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, C): bicubic-resized projected codes + word_embed bias + positions."""
        key = (tuple(prev_Bhw.shape[1:]), hw)
        if key not in self._taps:
            (ry, wy), (rx, wx) = bicubic_taps(key[0][0], hw[0]), bicubic_taps(key[0][1], hw[1])
            self._taps[key] = tuple(t.to(self.device) for t in (ry.int(), wy, rx.int(), wx))
        return next_tokens(prev_Bhw, self.proj_VC, self.model.word_embed.bias, self.positions(hw), hw,
                           self._taps[key], use_kernel=self.use_kernels)

    def transformer(self, x_BlC: torch.Tensor, blocks: torch.Tensor, kv: torch.Tensor, start: int,
                    keep_kv: bool = True) -> torch.Tensor:
        """Every block on one step's tokens x (2B, l, C) float32, given the label set's block
        modulation (depth, 2B, 6, C); writes the step's keys/values into kv (depth, 2, L, 2B, H, d)
        at [start, start + l). Returns x after the last block. keep_kv=False (a generation's last step,
        whose keys no later step reads) lets `attend_step` skip those writes.

        Per block: the compiled qkv projection, the attention (by default `attend_step`: q/k norms, the
        cache write and attention over the cache in one Triton kernel; else `qk_norm_cache` and `attend`
        on the cache's views), and the compiled second half together with the
        next block's projection (the residual update fused with the next LayerNorm); in steps of at most
        `skinny_rows` rows, the projection and fc2 as split-K partial products summed in that compiled kernel. The same
        computation as `model.Block.forward_step` over the weights as plain tensors. Steps that
        `_small_step` accepts run all of this as one `small_step` kernel instead."""
        eps, W = self.model.cfg.norm_eps, self.block_weights
        if self._small_step(x_BlC, kv, start):
            x_BlC = x_BlC.clone(memory_format=torch.contiguous_format)  # updated in place
            small_step(x_BlC, blocks, kv, self.step_weights, start, eps, use_kernel=self.use_kernels)
            return x_BlC
        end = start + x_BlC.shape[1]
        rows = x_BlC.shape[0] * x_BlC.shape[1]
        splits = self.skinny_splits if rows <= self.skinny_rows else (0, 0)
        lt = self.lt_gemms
        qkv = self.qkv_proj(x_BlC, blocks[0], W[0][0], W[0][1], eps, lt)
        fused = self.attention == "step" and _attention.step_kernel_available(qkv, kv)
        for i, (_, _, scale, *second) in enumerate(W):
            if fused:
                o = _attention.attend_step(qkv, scale, kv[i, 0], kv[i, 1], start, write_cache=keep_kv).transpose(1, 2)
            else:
                q = qk_norm_cache(qkv, scale, kv[i, 0], kv[i, 1], start, use_kernel=self.use_kernels)
                o = attend(q, kv[i, 0], kv[i, 1], end, kernel=self.attention != "sdpa")
            if i + 1 < len(W):
                x_BlC, qkv = self.finish_qkv(x_BlC, blocks[i], o, *second, blocks[i + 1], W[i + 1][0], W[i + 1][1],
                                             eps, splits, lt)
            else:
                x_BlC = self.finish_step(x_BlC, blocks[i], o, *second, eps, splits, lt)
        return x_BlC

    def gemm_shapes(self, schedule: Schedule, B: int, first_from_table: bool) -> list[tuple[int, int, int, bool]]:
        """(M, N, K, gelu) of the block GEMMs that a generation of B images runs through the per-block path: qkv
        and fc1 of every step but those of at most `small_step_rows` rows (one `small_step` kernel) and, with
        `first_from_table`, the first; the projection and fc2 where the step is not split-K (`skinny_rows`).
        A step that `small_step` refuses for other reasons (e.g. over 256 keys) runs the per-block path untuned,
        i.e. with the heuristic's first algorithm, as before `lt_linear`."""
        C, hidden = self.model.cfg.width, self.model.cfg.mlp_hidden
        shapes = []
        for si, (h, w) in enumerate(schedule):
            rows = 2 * B * h * w
            if (si == 0 and first_from_table) or (self.fused_small_steps and rows <= self.small_step_rows):
                continue
            shapes += [(rows, 3 * C, C, False), (rows, hidden, C, True)]
            if rows > self.skinny_rows:
                shapes += [(rows, C, C, False), (rows, C, hidden, False)]
        return shapes

    def _small_step(self, x_BlC: torch.Tensor, kv: torch.Tensor, start: int) -> bool:
        """Whether this step runs as one `small_step` kernel (few rows; on CPU only when asked)."""
        if not self.fused_small_steps or x_BlC.shape[0] * x_BlC.shape[1] > self.small_step_rows:
            return False
        if not x_BlC.is_cuda:
            return True
        if not kv.is_contiguous():  # a head-major cache: the kernel takes the token-major layout
            return False
        cfg = self.model.cfg
        R, l, C = x_BlC.shape
        return (self.use_kernels and small_step_fits(R, l, C, cfg.heads, cfg.mlp_hidden, cfg.depth, kv.shape[2], start,
                                                     kv.dtype, kv.device) and load_kernels())

    def logits(self, x_BlC: torch.Tensor, head_B2C: torch.Tensor) -> torch.Tensor:
        """Head in the model's dtype with float32 logits (bf16/fp16 GEMM with fp32 output on CUDA)."""
        x = self.head_input(x_BlC, head_B2C, self.head_w, self.model.cfg.norm_eps)
        return (self._head_mm(x) + self.head_b).view(*x.shape[:2], -1)

    def _head_mm(self, x_BlC: torch.Tensor) -> torch.Tensor:
        """x W_head^T without the bias, float32 (N, V) from the head's input in the weight's dtype."""
        x = x_BlC.reshape(-1, x_BlC.shape[-1])
        if self.dtype == torch.float32:
            return x @ self.head_w.t()
        if self._mm_fp32_out:
            return torch.mm(x, self.head_w.t(), out_dtype=torch.float32)
        return (x @ self.head_w.t()).float()

    def guided_logits(self, x_2BlC: torch.Tensor, head_2B2C: torch.Tensor, coef_2: torch.Tensor,
                      bias: bool = True) -> torch.Tensor:
        """Guided float32 logits (B, l, V) of one step: the head of `guided_head_input` (coefficients (a, b)
        from `guidance_coefficients`); equal to guiding `logits` up to rounding. bias=False leaves the head's
        bias out, for `guided_sample` to add as it loads the row (no pass over the logits for it: with
        out_dtype, torch.addmm writes the broadcast bias into the output before the GEMM)."""
        x = self.guided_head_input(x_2BlC, head_2B2C, coef_2, self.head_w, self.model.cfg.norm_eps)
        out = self._head_mm(x)
        return (out + self.head_b if bias else out).view(*x.shape[:2], -1)

    # ---- the whole generation on a plan's buffers --------------------------------------------
    def _body(self, plan: _Plan, stage=None) -> None:
        """The whole generation on the plan's buffers. `stage(name)`, if given, is a context manager
        around each stage (token preparation, transformer, sampling, decode) for profiling."""
        B, p, sched = plan.B, plan.params, plan.schedule
        stage = stage or _no_stage
        for si, hw in enumerate(sched):
            if si > 0:
                with stage("tokens"):  # float32, the batch twice (conditional and unconditional rows) in one copy
                    t = self.next_tokens(plan.codes[si - 1], hw)
                    x = t.new_empty((2 * B, *t.shape[1:]), dtype=torch.float32)
                    x.view(2, *t.shape).copy_(t)
            with stage("transformer"):
                logits = None
                if si == 0:
                    logits = self.first_step_logits(plan.first, plan.labels, plan.coef[0], bias=False)
                    x = self.first_step_rows(plan.first, hw, plan.labels, plan.cond, plan.blocks, plan.cache.kv,
                                             rows=logits is None)
                else:
                    x = self.transformer(x, plan.blocks, plan.cache.kv, sched.offsets[si],
                                         keep_kv=self.last_step_kv or si + 1 < len(sched))
                if logits is None:
                    logits = self.guided_logits(x, plan.head, plan.coef[si], bias=False)  # guided: (B, l, V)
            with stage("sampling"):
                idx = guided_sample(logits, plan.seed, 0.0, "none", step_top_k(hw, p), p.top_p, si,
                                    use_kernel=self.use_kernels, bias_V=self.head_b).view(B, *hw)
                if plan.forced is not None:
                    idx = torch.where(plan.forced[si][1], plan.forced[si][0], idx)
                plan.codes[si].copy_(idx)
        if plan.decode:
            with stage("decode"):
                plan.image.copy_(self.decode(plan.codes[-1]))

    @torch.no_grad()
    def profile(self, labels_B: list[int], schedule: Schedule, params: SamplingParams, seed: int,
                decode: bool = True) -> dict[str, float]:
        """Milliseconds per stage of one eager (not graph-replayed) run, timed with CUDA events."""
        plan = self._plan(schedule, len(labels_B), params, decode)
        self._load(plan, labels_B, seed)
        spans: dict[str, list] = {}

        @contextmanager
        def stage(name):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            yield
            b.record()
            spans.setdefault(name, []).append((a, b))

        self._body(plan, stage)
        torch.cuda.synchronize(self.device)
        return {k: sum(a.elapsed_time(b) for a, b in v) for k, v in spans.items()}

    def _load(self, plan: _Plan, labels_B: list[int], seed: int) -> None:
        """A generation's inputs into the plan's buffers: labels (then the null class), their modulation, seed."""
        labels, cond, blocks, head = self.label_set(tuple(labels_B) + (self.model.cfg.null_class,) * len(labels_B))
        plan.labels.copy_(labels)
        plan.cond.copy_(cond)
        plan.blocks.copy_(blocks)
        plan.head.copy_(head)
        plan.seed.fill_(seed_word(seed))

    def _plan(self, schedule: Schedule, B: int, params: SamplingParams, decode: bool, forced: bool = False) -> _Plan:
        key = (schedule.steps, B, params, decode, forced)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        cfg, dev, dt = self.model.cfg, self.device, self.dtype
        H, W = schedule.image_size
        plan = _Plan(
            schedule, B, params, decode,
            labels=torch.zeros(2 * B, dtype=torch.long, device=dev),
            cond=torch.zeros(2 * B, cfg.width, dtype=dt, device=dev),
            blocks=torch.zeros(cfg.depth, 2 * B, 6, cfg.width, dtype=dt, device=dev),
            head=torch.zeros(2 * B, 2, cfg.width, dtype=dt, device=dev),
            seed=torch.zeros(1, dtype=torch.int64, device=dev),
            coef=guidance_coefficients(schedule, params).to(dev),
            cache=KVCache(cfg.depth, schedule.total_tokens, 2 * B, cfg.heads, cfg.head_dim, dt, dev,
                          head_major=self.kv_head_major_min_batch is not None and B >= self.kv_head_major_min_batch),
            codes=[torch.zeros(B, h, w, dtype=torch.long, device=dev) for h, w in schedule],
            image=torch.zeros(B, H, W, 3, dtype=torch.uint8, device=dev) if decode else None,
            forced=[(torch.zeros(B, h, w, dtype=torch.long, device=dev), torch.zeros(B, h, w, dtype=torch.bool, device=dev))
                    for h, w in schedule] if forced else None,
            first=self.first_step(schedule.steps[0]),
        )
        if self.lt_gemms and self.device.type == "cuda":  # before any run: the choices are made once per shape
            _lt.tune(self.gemm_shapes(schedule, B, plan.first is not None), self.dtype, self.device)
        if self.use_graphs:
            self._capture(plan)
        self._plans[key] = plan
        if len(self._plans) > self.max_plans:
            self._plans.popitem(last=False)
        return plan

    def clear(self) -> None:
        """Drop every plan (buffers, KV caches, graphs and their memory pools) and the first-step tables."""
        self._plans.clear()
        self._first.clear()

    def _capture(self, plan: _Plan) -> None:
        with torch.no_grad():
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._body(plan)  # warm-up: kernels chosen, workspaces allocated
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._body(plan)
        plan.graph = graph

    @torch.no_grad()
    def generate(self, labels_B: list[int], schedule: Schedule, params: SamplingParams, seed: int,
                 decode: bool = True, forced: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                 ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Codes per step (device tensors, valid until the next call with the same plan) and uint8 images.

        forced: per step (codes, keep), broadcastable to (B, h, w): kept codes replace the sampled ones.
        """
        B = len(labels_B)
        plan = self._plan(schedule, B, params, decode, forced is not None)
        if forced is not None:
            for (want, keep), (dst_w, dst_k) in zip(forced, plan.forced):
                dst_w.copy_(want.expand_as(dst_w))
                dst_k.copy_(keep.expand_as(dst_k))
        self._load(plan, labels_B, seed)
        if plan.graph is not None:
            plan.graph.replay()
        else:
            self._body(plan)
        return plan.codes, plan.image
