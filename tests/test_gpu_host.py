"""The C++ host's CUDA build (marked gpu): CMake with nvcc and the installed CUDA torch, artifacts
exported on the GPU in float32 (in a child process), greedy codes equal to the Python reference
runtime's at every step and images within 1/255, and seeded sampling that repeats and tells seeds apart above bit 32
(bench/host_latency.check_fp32)."""
import shutil

import pytest
import torch

from conftest import cmake_build

pytestmark = pytest.mark.gpu


def test_cuda_host_matches_reference(tmp_path_factory):
    if shutil.which("cmake") is None or torch.version.cuda is None:
        pytest.skip("needs cmake and a CUDA build of torch")
    from flexvar.bench.host_latency import check_fp32
    build = cmake_build(tmp_path_factory.mktemp("host-cuda"), "flexvar_host",
                        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DCMAKE_CUDA_ARCHITECTURES=native")
    res = check_fp32(str(build / "flexvar_host"), tmp_path_factory.mktemp("host-cuda-run"))
    assert res.pop("seeds") == {"repeat_equal": True, "high_word_differs": True}
    assert len(res) == 3
    for spec, r in res.items():
        assert r["codes_equal"] and r["max_pixel_diff"] <= 1, (spec, r)
