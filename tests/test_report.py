"""bench/report.py: one section per benchmark file, with its device, command and table."""
import json

import pytest

from flexvar.bench.report import table


def _row(impl, ms, B=1):
    return {"depth": "d16", "schedule": "256-10", "image": "256x256", "batch": B, "impl": impl, "median_ms": ms,
            "min_ms": ms - 1, "max_ms": ms + 1, "images_per_s": 1000 * B / ms, "warmup_s": 0.5}


def test_report_sections_per_file(tmp_path):
    meta = {"device": "GPU X", "date": "2026-11-22", "torch": "2.11", "dtype": "fp16", "autocast_eager": "fp16",
            "decode_included": True, "ceilings": {}}
    a = dict(meta, command="/venv/bin/flexvar bench --out /root/out/a.json",
             results=[_row("eager", 200.0), _row("fast", 10.0), _row("fast-nographs", 40.0)])
    b = dict(meta, command="/venv/bin/flexvar bench --out /root/out/b.json", results=[_row("fast", 20.0, B=4)])
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    (tmp_path / "p.json").write_text(json.dumps({"rows": []}))  # not a benchmark file: skipped
    out = table([str(pb), str(pa), str(tmp_path / "p.json")])
    assert out.index("### `b.json`") < out.index("### `a.json`") and "p.json" not in out
    assert "command `flexvar bench --out $OUT/a.json`" in out
    assert "| d16 | 256-10 | 256x256 | 1 | 200.0 (199.0–201.0) | 10.0 (9.0–11.0) | 20.0× | 100 |" in out
    assert "| d16 | 256-10 | 1 | fast-nographs | 40.0 (39.0–41.0) | 25 | 0.5 |" in out
    assert "| d16 | 256-10 | 256x256 | 4 | – | 20.0 (19.0–21.0) | – | 200 |" in out


def test_profile_categories_name_the_fused_kernels():
    """The kernel profile groups every flexvar kernel (small_step included) under 'flexvar', not 'gemm'/'other'."""
    from flexvar.bench.profile_fast import _category
    for name in ("void (anonymous namespace)::small_step_kernel<__half, 1>(flexvar_small_step_args_t)",
                 "void (anonymous namespace)::guided_sample_kernel<1024, 10>(float const*, int)",
                 "void (anonymous namespace)::qk_norm_cache_kernel<__half, 2>(__half const*)"):
        assert _category(name) == "flexvar", name
    assert _category("nvjet_sm90_hsh_64x8_64x16_4x1_v_bz_bias_TNT") == "gemm"
    assert _category("triton_per_fused_add_native_layer_norm_0") == "triton"
    # the runtime's Triton kernels, by their jit names
    for name, cat in (("_attend_step_kernel", "attention"), ("_attend_kernel", "attention"),
                      ("_gn_stats_kernel", "groupnorm"), ("_gn_apply_kernel", "groupnorm"),
                      ("_gn_taps_kernel", "groupnorm"), ("_skinny_kernel", "gemm")):
        assert _category(name) == cat, name


@pytest.mark.parametrize("table", [False, True], ids=["step-1-computed", "first-step-table"])
def test_gemm_floor_is_the_runtimes_gemm_count(table):
    """bench/floors.py's GEMM FLOPs per generation equal what the fast runtime's matmuls count (FlopCounterMode,
    CPU, references), the label set's modulation (once per label set) cached by a first call."""
    from torch.utils.flop_counter import FlopCounterMode

    from flexvar.bench.floors import step_floors
    from flexvar.config import FlexVARConfig, VQVAEConfig
    from flexvar.fast import FastRuntime
    from flexvar.random_weights import random_tokenizer, random_transformer
    from flexvar.sampling import SamplingParams
    from flexvar.schedule import Schedule
    cfg = FlexVARConfig.from_name("tiny")
    rt = FastRuntime(random_transformer(cfg), random_tokenizer(VQVAEConfig.from_name("tiny")), use_graphs=False,
                     use_kernels=False, compile_blocks=False, compile_decoder=False, first_step_table=table)
    sched, labels = Schedule.parse("1,2,3,5"), [3, 9, 4]
    rt.generate(labels, sched, SamplingParams(), 0, False)  # label set and first-step table built
    with FlopCounterMode(display=False) as fc:
        rt.generate(labels, sched, SamplingParams(), 1, False)
    counted = sum(v for k, v in fc.get_flop_counts()["Global"].items() if str(k) in ("aten.mm", "aten.addmm"))
    # a float32 runtime's table holds the keys and values, not the head's output: its step 1 runs the head
    assert not rt.first_step_float32
    floors = step_floors(cfg, sched, len(labels), first_step_table=table, table_logits=rt.first_step_float32)
    assert counted == sum(f["gemm_flop"] for f in floors) > 0
    head_1 = len(labels) * 2 * cfg.width * cfg.vocab_size
    assert (floors[0]["gemm_flop"] == head_1) == table
    assert step_floors(cfg, sched, len(labels), table)[0]["gemm_flop"] == (0 if table else floors[0]["gemm_flop"])
    assert floors[-1]["attention_bytes"] < step_floors(cfg, sched, len(labels), table,
                                                       last_step_kv=True)[-1]["attention_bytes"]


def test_floor_lines_split_the_kernels_by_step():
    from flexvar.bench.profile_fast import floor_lines
    kernels = [("sm90_xmma_gemm_f16", 0, 10.0), ("_attend_step_kernel", 10, 4.0), ("triton_per_fused_ln", 14, 3.0),
               ("guided_sample_rows_kernel", 17, 2.0),  # step 1 ends
               ("sm90_xmma_gemm_f16", 20, 30.0), ("guided_sample_rows_kernel", 50, 5.0),  # step 2 ends
               ("cudnn_conv_fprop", 60, 100.0)]  # the decode
    floors = [dict(gemm_flop=5e6, attention_bytes=2e3, attention_flop=1e6, ln_bytes=1e3, sample_bytes=1e3),
              dict(gemm_flop=20e6, attention_bytes=1e3, attention_flop=3e6, ln_bytes=0, sample_bytes=3e3)]
    lines = floor_lines(kernels, floors, tflops=1.0, gbps=1.0)  # 1 TFLOP/s: 1e6 FLOP a us; 1 GB/s: 1e3 B a us
    assert len(lines) == 4 and lines[1].startswith("step  1: gemm     10.0 /      5.0, attention      4.0 /      2.0")
    assert "inductor      3.0 /      1.0, sampling      2.0 /      1.0" in lines[1]
    # attention's floor: its bytes (2 us) at step 1, its products (3 us) at step 2
    assert lines[2].startswith("step  2: gemm     30.0 /     20.0, attention      0.0 /      3.0")
    assert "gemm     40.0 /     25.0 (+15)" in lines[3] and "sampling      7.0 /      4.0 (+3)" in lines[3]


def test_runtime_floor_lines_read_the_runtimes_options(pipe_test):
    """profile_fast --floors' glue: the floors of a runtime's own configuration (first-step table, last-step cache
    writes), at the ceilings `measure_ceilings` reports."""
    from flexvar.bench.floors import step_floors
    from flexvar.bench.profile_fast import runtime_floor_lines
    from flexvar.fast import FastRuntime
    from flexvar.schedule import Schedule
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, first_step_table=True)
    sched = Schedule.parse("1,2,4")
    kernels = [("sm90_xmma_gemm", 0, 1.0), ("guided_sample_rows_kernel", 1, 1.0)] * 3
    lines = runtime_floor_lines(rt, sched, 2, kernels, {"bf16_matmul_TFLOPs": 1.0, "copy_GBps": 1.0})
    fl = step_floors(pipe_test.model.cfg, sched, 2, first_step_table=True, last_step_kv=rt.last_step_kv,
                     table_logits=rt.first_step_float32)
    assert len(lines) == 5 and lines[0].startswith("floors at 1 TFLOP/s and 1 GB/s")
    assert f"gemm      1.0 / {fl[2]['gemm_flop'] / 1e6:8.1f}" in lines[3]
