"""bench/precision.py on CPU (tiny preset, float32): the teacher-forced and free-running agreement
of the fast runtime and of an onnxruntime engine with the reference is exact; a backend that cannot
run is reported as a row with its error, and the others still run."""
import json

from flexvar.bench import precision


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
    from flexvar.config import FlexVARConfig
    from flexvar.random_weights import random_transformer
    m = random_transformer(FlexVARConfig.from_name("tiny"), seed=0, device="cpu")
    names = [n for n, _ in m.named_parameters()]
    linears = [n for n in names if precision.ROUNDED["linears"](n)]
    assert len(linears) == 4 * m.cfg.depth
    assert {n.rsplit(".", 2)[-2] for n in linears} == {"mat_qkv", "proj", "fc1", "fc2"}
    kept = [n for n in names if not precision.ROUNDED["noada"](n)]
    assert kept and all("ada_lin" in n or n.startswith("class_emb") for n in kept)
    assert any(n.startswith("head_nm.ada_lin") for n in kept) and "class_emb.weight" in kept


def test_unknown_precision_is_a_usage_error(capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        precision.main(["--device", "cpu", "--dtypes", "bf16w-heads"])
    assert e.value.code == 2 and "unknown precision 'bf16w-heads'" in capsys.readouterr().err
