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
