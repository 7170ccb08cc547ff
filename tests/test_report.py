"""bench/report.py: one section per benchmark file, with its device, command and table."""
import json

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
