"""The native build: CMake compiles the framework-free CUDA kernels for sm_80 and sm_90 wherever nvcc
exists (no GPU needed to compile)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _nvcc():
    for c in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"))):
        if c and Path(c).exists():
            return str(c)
    return None


@pytest.mark.skipif(shutil.which("cmake") is None or _nvcc() is None, reason="needs cmake and nvcc")
def test_cmake_builds_kernels_library(tmp_path):
    build = tmp_path / "build"
    cfg = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={_nvcc()}"],
                         capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout[-2000:] + cfg.stderr[-2000:]
    out = subprocess.run(["cmake", "--build", str(build), "-j", "2", "--target", "flexvar_kernels"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert (build / "libflexvar_kernels.a").exists()
    flags = (build / "CMakeFiles" / "flexvar_kernels.dir" / "flags.make").read_text()
    assert "sm_80" in flags and "sm_90" in flags
