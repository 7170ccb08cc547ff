"""One Pipeline shared by threads (a server's worker pool), and results that outlive later calls."""
import sys
import threading

import torch

from flexvar import Pipeline


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.codes, b.codes)) and torch.equal(a.images, b.images)


def test_results_are_not_overwritten_by_later_calls(pipe_test):
    """The fast runtime computes into per-plan buffers; what `generate` returns is the caller's own copy, also where
    the device is the CPU (where `.cpu()` would hand back the buffers themselves)."""
    fast = Pipeline(pipe_test.model, pipe_test.vae, fast=True)
    a = fast.generate([1, 2], "1,2,4", seed=0)
    kept = [c.clone() for c in a.codes], a.images.clone()
    b = fast.generate([5, 6], "1,2,4", seed=1)  # the same plan (schedule, batch, sampling)
    assert not torch.equal(b.codes[-1], kept[0][-1])
    assert all(torch.equal(x, y) for x, y in zip(a.codes, kept[0])) and torch.equal(a.images, kept[1])


def test_concurrent_generations_on_one_pipeline(pipe_test):
    """Threads calling one Pipeline's fast runtime at once each get their own generation: the runtime's plan
    buffers (labels, seed, codes, images) are used by one call at a time."""
    jobs = [([1 + i, 7], i) for i in range(6)]
    ref = Pipeline(pipe_test.model, pipe_test.vae, fast=True)
    want = [ref.generate(lab, "1,2,4,6", seed=seed) for lab, seed in jobs]
    shared = Pipeline(pipe_test.model, pipe_test.vae, fast=True)
    got = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def work(i):
        start.wait()
        for _ in range(3):
            got[i].append(shared.generate(jobs[i][0], "1,2,4,6", seed=jobs[i][1]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that calls interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert all(len(g) == 3 and all(_same(w, x) for x in g) for w, g in zip(want, got))
