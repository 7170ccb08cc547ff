"""The native build: CMake compiles the framework-free CUDA kernels for sm_80 and sm_90 wherever nvcc
exists (no GPU needed to compile)."""
import shutil
from pathlib import Path

import pytest

from conftest import cmake_build


def _nvcc():
    for c in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"))):
        if c and Path(c).exists():
            return str(c)
    return None


@pytest.mark.skipif(shutil.which("cmake") is None or _nvcc() is None, reason="needs cmake and nvcc")
def test_cmake_builds_kernels_library(tmp_path):
    build = cmake_build(tmp_path / "build", "flexvar_kernels", f"-DCMAKE_CUDA_COMPILER={_nvcc()}")
    assert (build / "libflexvar_kernels.a").exists()
    flags = (build / "CMakeFiles" / "flexvar_kernels.dir" / "flags.make").read_text()
    assert "sm_80" in flags and "sm_90" in flags


def test_kernel_sources_are_package_data():
    """An installed (non-editable) package builds the kernels on first use from its own copy of the
    sources, so every file under kernels/{include,src,torch} must match a package-data pattern."""
    import fnmatch
    import tomllib
    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["flexvar.kernels"]
    files = [p.relative_to(root / "kernels").as_posix() for d in ("include", "src", "torch")
             for p in (root / "kernels" / d).rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not installed with the package: {missing}"
