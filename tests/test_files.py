"""Files replaced whole (flexvar.files), where the project writes them: a failure leaves the old file and no
temporary one."""
import pytest

from flexvar.files import replaced, write_text


def test_replaced_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "manifest.json"
    write_text(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with replaced(target) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt  # Ctrl-C in the middle of a write
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    with replaced(target, ".tmp.pt2") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.pt2")
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_failed_onnx_export_leaves_no_file(tmp_path, pipe_test, monkeypatch):
    """An export that fails after writing (here onnx.checker) leaves neither the graph nor its temporary file."""
    import onnx

    from flexvar.export import export_onnx

    def refuse(*a, **k):
        raise onnx.checker.ValidationError("planted")

    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError, match="planted"):
        export_onnx(pipe_test.model, pipe_test.vae, tmp_path / "e", log=lambda *a: None)
    assert list((tmp_path / "e").iterdir()) == []
