"""A straightforward eager sampler that follows the release's algorithm.

Written from the spec over the raw state_dicts, with no code shared with the
modules in `model.py` / `vqvae.py`: explicit attention matmuls, a KV cache grown
with `torch.cat`, every block's modulation recomputed at every step, and the
tokenizer's distance-based quantizer. It is the oracle of the parity tests and
the "eager" baseline of the benchmarks; it is not meant to be fast.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GREEDY_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 24, 32)


class ReleaseSampler:
    def __init__(self, var_sd: dict, vae_sd: dict):
        self.w = {k: v for k, v in var_sd.items() if k != "attn_bias_for_masking"}
        self.v = {k: v for k, v in vae_sd.items() if k != "quantize.codebook_used"}
        self.depth = 1 + max(int(k.split(".")[1]) for k in self.w if k.startswith("blocks."))
        self.C = self.w["word_embed.weight"].shape[0]
        self.H = self.w["blocks.0.attn.scale_mul_1H11"].shape[1]
        self.null_label = self.w["class_emb.weight"].shape[0] - 1

    # ---------------------------------------------------------------- transformer
    def _lin(self, x, name, bias=True):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"] if bias else None)

    def _ln(self, x):
        return F.layer_norm(x, (self.C,), eps=1e-6)

    def _block(self, i, x, cond, cache, mask=None):
        p, C, H = f"blocks.{i}.", self.C, self.H
        B, L, _ = x.shape
        g1, g2, s1, s2, b1, b2 = self._lin(F.silu(cond), p + "ada_lin.1").view(B, 1, 6, C).unbind(2)
        h = self._ln(x) * (1 + s1) + b1
        bias = torch.cat([self.w[p + "attn.q_bias"], self.w[p + "attn.zero_k_bias"], self.w[p + "attn.v_bias"]])
        qkv = F.linear(h, self.w[p + "attn.mat_qkv.weight"], bias).view(B, L, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = self.w[p + "attn.scale_mul_1H11"].clamp_max(math.log(100)).exp()
        q = F.normalize(q, dim=-1) * scale
        k = F.normalize(k, dim=-1)
        if cache is not None:  # grow the cache the way the release does
            if cache[i] is not None:
                k = torch.cat([cache[i][0], k], dim=2)
                v = torch.cat([cache[i][1], v], dim=2)
            cache[i] = (k, v)
        att = q @ k.transpose(-1, -2)  # softmax scale 1
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        o = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, L, C)
        x = x + self._lin(o, p + "attn.proj") * g1
        h = self._ln(x) * (1 + s2) + b2
        h = self._lin(F.gelu(self._lin(h, p + "ffn.fc1"), approximate="tanh"), p + "ffn.fc2")
        return x + h * g2

    def _head(self, x, cond):
        B = x.shape[0]
        scale, shift = self._lin(F.silu(cond), "head_nm.ada_lin.1").view(B, 1, 2, self.C).unbind(2)
        return self._lin(self._ln(x) * (1 + scale) + shift, "head")

    def _pos(self, h, w):
        return F.interpolate(self.w["pos_1LC"], size=(h, w), mode="area").flatten(2).transpose(1, 2)

    def _first(self, cond, h, w):
        return cond.unsqueeze(1) + self.w["pos_start"] + self._pos(h, w)

    def _next(self, idx_Bhw, h, w):
        book = F.normalize(self.v["quantize.embedding.weight"], dim=-1)
        vec = book[idx_Bhw].permute(0, 3, 1, 2)
        vec = F.interpolate(vec, size=(h, w), mode="bicubic", align_corners=False)
        return self._lin(vec.flatten(2).transpose(1, 2), "word_embed") + self._pos(h, w)

    @torch.no_grad()
    def teacher_forced_logits(self, labels, codes, steps):
        """Conditional logits of every step given the codes of earlier steps (no guidance)."""
        labels = torch.as_tensor(labels)
        cond = self.w["class_emb.weight"][labels]
        cache, out = [None] * self.depth, []
        for si, (h, w) in enumerate(steps):
            x = self._first(cond, h, w) if si == 0 else self._next(codes[si - 1], h, w)
            for i in range(self.depth):
                x = self._block(i, x, cond, cache)
            out.append(self._head(x, cond))
        return out

    @torch.no_grad()
    def full_sequence_logits(self, labels, codes, steps):
        """The same logits from one pass over all tokens with the release's training mask."""
        labels = torch.as_tensor(labels)
        cond = self.w["class_emb.weight"][labels]
        xs = [self._first(cond, *steps[0])] + [self._next(codes[i - 1], h, w) for i, (h, w) in enumerate(steps) if i]
        x = torch.cat(xs, dim=1)
        lvl = torch.cat([torch.full((h * w,), i) for i, (h, w) in enumerate(steps)])
        mask = lvl[None, :] <= lvl[:, None]
        for i in range(self.depth):
            x = self._block(i, x, cond, None, mask)
        logits = self._head(x, cond)
        return list(logits.split([h * w for h, w in steps], dim=1))

    @torch.no_grad()
    def generate_codes(self, labels, steps, cfg=2.5, guidance="ramp", top_k=900, top_p=0.95,
                       seed=0, max_pn=16, greedy_off_grid=True):
        """Codes (B, h, w) of every step, sampled as the release samples them."""
        labels = torch.as_tensor(labels)
        B, n = labels.shape[0], len(steps)
        rng = torch.Generator(labels.device).manual_seed(seed)
        both = torch.cat([labels, torch.full_like(labels, self.null_label)])
        cond = self.w["class_emb.weight"][both]
        cache, codes = [None] * self.depth, []
        for si, (h, w) in enumerate(steps):
            x = self._first(cond, h, w) if si == 0 else self._next(codes[-1], h, w).repeat(2, 1, 1)
            for i in range(self.depth):
                x = self._block(i, x, cond, cache)
            logits = self._head(x, cond)
            c, u = logits[:B], logits[B:]
            if guidance == "ramp":
                t = cfg if (max(h, w) > max_pn or n == 1) else cfg * si / min(n - 1, 9)
                logits = (1 + t) * c - t * u
            else:
                logits = u + cfg * (c - u)
            off = max(h, w) > max_pn or h not in GREEDY_GRID or w not in GREEDY_GRID
            k = 1 if (greedy_off_grid and off) else top_k
            codes.append(self._sample(logits, k, top_p, rng).view(B, h, w))
        return codes

    @staticmethod
    def _sample(logits, top_k, top_p, rng):
        B, L, V = logits.shape
        if 0 < top_k < V:
            kth = logits.topk(top_k, dim=-1)[0][..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if 0 < top_p < 1:
            srt, order = logits.sort(dim=-1)
            remove = srt.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
            remove[..., -1] = False
            logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))
        probs = logits.softmax(dim=-1).view(-1, V)
        return torch.multinomial(probs, 1, replacement=True, generator=rng).view(B, L)

    # ---------------------------------------------------------------- tokenizer
    def _conv(self, x, name, **kw):
        return F.conv2d(x, self.v[name + ".weight"], self.v[name + ".bias"], **kw)

    def _gn(self, x, name):
        return F.group_norm(x, 32, self.v[name + ".weight"], self.v[name + ".bias"], eps=1e-6)

    def _res(self, x, p):
        h = self._conv(F.silu(self._gn(x, p + ".norm1")), p + ".conv1", padding=1)
        h = self._conv(F.silu(self._gn(h, p + ".norm2")), p + ".conv2", padding=1)
        if p + ".nin_shortcut.weight" in self.v:
            x = self._conv(x, p + ".nin_shortcut")
        return x + h

    def _attn(self, x, p):
        B, C, H, W = x.shape
        h = self._gn(x, p + ".norm")
        q = self._conv(h, p + ".q").reshape(B, C, H * W).permute(0, 2, 1)
        k = self._conv(h, p + ".k").reshape(B, C, H * W)
        v = self._conv(h, p + ".v").reshape(B, C, H * W)
        a = torch.bmm(q, k).mul(C ** -0.5).softmax(dim=2)
        o = torch.bmm(v, a.permute(0, 2, 1)).reshape(B, C, H, W)
        return x + self._conv(o, p + ".proj_out")

    def _levels(self, x, net):
        i = 0
        while f"{net}.conv_blocks.{i}.res.0.conv1.weight" in self.v:
            p, j = f"{net}.conv_blocks.{i}", 0
            while f"{p}.res.{j}.conv1.weight" in self.v:
                x = self._res(x, f"{p}.res.{j}")
                if f"{p}.attn.{j}.q.weight" in self.v:
                    x = self._attn(x, f"{p}.attn.{j}")
                j += 1
            if f"{p}.downsample.conv.weight" in self.v:
                x = self._conv(F.pad(x, (0, 1, 0, 1)), f"{p}.downsample.conv", stride=2)
            if f"{p}.upsample.conv.weight" in self.v:
                x = self._conv(F.interpolate(x, scale_factor=2, mode="nearest"), f"{p}.upsample.conv", padding=1)
            i += 1
        return x

    def _mid(self, x, net):
        x = self._res(x, f"{net}.mid.0")
        x = self._attn(x, f"{net}.mid.1")
        return self._res(x, f"{net}.mid.2")

    @torch.no_grad()
    def encode_multiscale(self, img_B3HW, steps):
        x = self._conv(img_B3HW, "encoder.conv_in", padding=1)
        x = self._mid(self._levels(x, "encoder"), "encoder")
        x = self._conv(F.silu(self._gn(x, "encoder.norm_out")), "encoder.conv_out", padding=1)
        z = self._conv(x, "quant_conv")
        book = F.normalize(self.v["quantize.embedding.weight"], dim=-1)
        out = []
        for h, w in steps:
            zz = F.normalize(F.interpolate(z, size=(h, w), mode="area").permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)
            d = zz.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * zz @ book.t()
            out.append(d.argmin(dim=1).view(z.shape[0], h, w))
        return out

    @torch.no_grad()
    def decode(self, idx_Bhw):
        """Image in [-1, 1], (B, 3, 16h, 16w)."""
        book = F.normalize(self.v["quantize.embedding.weight"], dim=-1)
        z = self._conv(book[idx_Bhw].permute(0, 3, 1, 2), "post_quant_conv")
        x = self._mid(self._conv(z, "decoder.conv_in", padding=1), "decoder")
        x = self._levels(x, "decoder")
        return self._conv(F.silu(self._gn(x, "decoder.norm_out")), "decoder.conv_out", padding=1)
