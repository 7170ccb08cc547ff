"""bench/precision.py on CPU (tiny preset, float32): the teacher-forced and free-running agreement
of the fast runtime and of an onnxruntime engine with the reference is exact; a backend that cannot
run is reported as a row with its error, and the others still run."""
import copy
import json

import pytest
import torch

from flexvar import Pipeline
from flexvar.bench import precision
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule


def test_precision_rows_cpu(tmp_path):
    out = tmp_path / "p.json"
    rc = precision.main(["--device", "cpu", "--depth", "tiny", "--tokenizer", "tiny", "--batch", "2",
                         "--schedule", "1,2,3,4", "--backends", "fast,onnxruntime,tensorrt", "--dtypes", "fp32",
                         "--engine-dtypes", "fp32", "--engine-dir", str(tmp_path / "eng"), "--out", str(out)])
    assert rc == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    for b in ("fast", "onnxruntime"):
        r = rows[b]
        assert len(r["one_step_agreement_per_step"]) == 4, r
        assert r["one_step_agreement_all"] == 1.0 and r["free_running_final_code_agreement"] == 1.0, r
        assert r["psnr_db_vs_fp32_reference"] > 60, r
        by_margin = r["one_step_agreement_by_fp32_margin"]
        assert [m["min_margin"] for m in by_margin] == list(precision.MARGINS), r
        assert by_margin[0]["share_of_tokens"] == 1.0, r  # every margin is >= 0
        shares = [m["share_of_tokens"] for m in by_margin]
        assert shares == sorted(shares, reverse=True), r
        assert all(m["agreement"] in (1.0, None) for m in by_margin), r
    assert "error" in rows["tensorrt"] and "one_step_agreement_all" not in rows["tensorrt"]


def test_weights_rounding_rows_cpu(tmp_path):
    """bf16w / fp16w rows run float32 on weights rounded to bf16 / fp16: finite PSNR (the weights did
    change), bf16's rounding costing more than fp16's."""
    out = tmp_path / "w.json"
    rc = precision.main(["--device", "cpu", "--depth", "tiny", "--tokenizer", "tiny", "--batch", "2",
                         "--schedule", "1,2,3", "--dtypes", "bf16w,fp16w", "--out", str(out)])
    assert rc == 0
    rows = {r["dtype"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"bf16w", "fp16w"} and all("error" not in r for r in rows.values()), rows
    assert 20 < rows["bf16w"]["psnr_db_vs_fp32_reference"] < rows["fp16w"]["psnr_db_vs_fp32_reference"] < 200, rows


def test_partial_rounding_selects_the_named_weights():
    """bf16w-linears rounds exactly the blocks' four GEMM weights; bf16w-noada everything but the class
    embedding and the ada_lin layers."""
    m = random_transformer(FlexVARConfig.from_name("tiny"), seed=0, device="cpu")
    names = [n for n, _ in m.named_parameters()]
    linears = [n for n in names if precision.ROUNDED["linears"](n)]
    assert len(linears) == 4 * m.cfg.depth
    assert {n.rsplit(".", 2)[-2] for n in linears} == {"mat_qkv", "proj", "fc1", "fc2"}
    kept = [n for n in names if not precision.ROUNDED["noada"](n)]
    assert kept and all("ada_lin" in n or n.startswith("class_emb") for n in kept)
    assert any(n.startswith("head_nm.ada_lin") for n in kept) and "class_emb.weight" in kept


def test_unknown_precision_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        precision.main(["--device", "cpu", "--dtypes", "bf16w-heads"])
    assert e.value.code == 2 and "unknown precision 'bf16w-heads'" in capsys.readouterr().err


def test_margin_agreement_counts_the_tokens_at_or_above_each_margin():
    """Two steps, six tokens: margins 0, 0.05, 0.2, 0.2, 0.7, 2.0; the two smallest disagree."""
    equal = [torch.tensor([[False, False]]), torch.tensor([[[True, True], [True, True]]])]
    margins = [torch.tensor([[0.0, 0.05]]), torch.tensor([[[0.2, 0.2], [0.7, 2.0]]])]
    rows = precision.margin_agreement(equal, margins, thresholds=(0.0, 0.05, 0.1, 1.0, 5.0))
    assert rows == [{"min_margin": 0.0, "share_of_tokens": 1.0, "agreement": round(4 / 6, 4)},
                    {"min_margin": 0.05, "share_of_tokens": round(5 / 6, 4), "agreement": 0.8},
                    {"min_margin": 0.1, "share_of_tokens": round(4 / 6, 4), "agreement": 1.0},
                    {"min_margin": 1.0, "share_of_tokens": round(1 / 6, 4), "agreement": 1.0},
                    {"min_margin": 5.0, "share_of_tokens": 0.0, "agreement": None}]


def test_reference_margins_are_the_float32_top_two_gaps():
    """The margins are computed from the float32 guided logits: on the tiny preset they match a direct top-2 of
    the reference runtime's teacher-forced guided logits to ~1e-4 nats, and are non-negative."""
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=0, device="cpu")
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=1, device="cpu")
    sched, labels = Schedule.parse("1,2,3"), [3, 40]
    p = SamplingParams(cfg=2.5, guidance="ramp", top_k=1, top_p=0.0)
    pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cpu", dtype=torch.float32)
    ref = pipe.generate(labels, sched, cfg=2.5, top_k=1, top_p=0.0, fast=False)
    margins = precision.reference_margins(pipe.fast_runtime, labels, sched, p, ref)
    cond = pipe.teacher_forced_logits(labels, ref.codes, sched)
    uncond = pipe.teacher_forced_logits([model.cfg.null_class] * len(labels), ref.codes, sched)
    for si, hw in enumerate(sched):
        g = guide(torch.cat([cond[si], uncond[si]]), guidance_weight(si, len(sched), hw, p), p.guidance)
        top = g.topk(2, dim=-1).values
        want = (top[..., 0] - top[..., 1]).view(-1, *hw)
        assert margins[si].shape == want.shape and (margins[si] >= 0).all()
        torch.testing.assert_close(margins[si], want, atol=1e-4, rtol=0)


def test_step1_over_labels_cpu(tmp_path):
    """--step1-labels: the fast rows' greedy first-step codes over that many classes against float32; exact in
    float32, with the margin rows; bf16-rounded weights flip only some; a count past the classes is a usage error."""
    out = tmp_path / "s1.json"
    rc = precision.main(["--device", "cpu", "--depth", "tiny", "--tokenizer", "tiny", "--batch", "2",
                         "--schedule", "2,3", "--dtypes", "fp32,bf16w", "--step1-labels", "60", "--out", str(out)])
    assert rc == 0
    rows = {r["dtype"]: r for r in json.loads(out.read_text())["rows"]}
    s32, s16 = rows["fp32"]["step1_agreement_over_labels"], rows["bf16w"]["step1_agreement_over_labels"]
    assert s32["labels"] == 60 and s32["tokens"] == 60 * 4 and s32["agreement"] == 1.0, s32
    assert [m["min_margin"] for m in s32["by_fp32_margin"]] == list(precision.MARGINS)
    assert 0.5 < s16["agreement"] <= 1.0 and s16["by_fp32_margin"][0]["agreement"] == s16["agreement"], s16
    with pytest.raises(SystemExit) as e:
        precision.main(["--device", "cpu", "--depth", "tiny", "--step1-labels", "1001"])
    assert e.value.code == 2


def test_step1_logits_are_the_first_teacher_forced_step():
    """fast_teacher_forced over the first steps only (a cache of their tokens) equals those steps of the whole run,
    and step1_logits (its first step, chunked over labels) the first step of the whole run for the same labels."""
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=0, device="cpu")
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=1, device="cpu")
    pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cpu", dtype=torch.float32)
    sched, p, labels = Schedule.parse("2,3,4"), SamplingParams(cfg=2.5, guidance="ramp", top_k=1, top_p=0.0), [5, 9, 17]
    got = precision.step1_logits(pipe.fast_runtime, labels, sched, p, chunk=2)
    g = torch.Generator().manual_seed(2)
    codes = [torch.randint(0, model.cfg.vocab_size, (3, h, w), generator=g) for h, w in sched]
    whole = precision.fast_teacher_forced(pipe.fast_runtime, labels, codes, sched, p)
    first_two = precision.fast_teacher_forced(pipe.fast_runtime, labels, codes, sched, p, steps=2)
    assert len(first_two) == 2 and all(torch.equal(a, b) for a, b in zip(first_two, whole))
    torch.testing.assert_close(got, whole[0].float(), atol=1e-5, rtol=1e-5)
