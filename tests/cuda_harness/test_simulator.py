"""The simulator itself: warp shuffles and votes, barrier reductions, and the bugs it must
catch (races, reads of unwritten or out-of-bounds shared memory, out-of-bounds global memory,
divergent barriers and collectives, invalid launches), on the small kernels of
selftest_kernels.cpp launched through csrc/cuda's launch_kernel."""
import subprocess
import sys

import pytest
import torch

from tests.cuda_harness import build
from tests.cuda_harness.harness import run_checked


def _launch(sim, name, threads, smem=0, out_size=None):
    out = torch.zeros(out_size or threads * 10)
    torch.ops.fastdw_cudasim.selftest(name, out, threads, smem)
    return out


def test_warp_intrinsics(sim):
    threads = 64
    o = _launch(sim, "warp_intrinsics", threads).view(threads, 10)
    t = torch.arange(threads)
    lane, v = t % 32, (100 + t).float()
    base = t - lane

    def lanes(src, keep):
        return torch.where(keep, v[base + src.clamp(0, 31)], v)

    seg8 = lane // 8 * 8
    expected = torch.stack([
        lanes(lane + 3, lane + 3 < 32),
        lanes(lane - 5, lane - 5 >= 0),
        lanes(lane ^ 6, torch.ones_like(lane, dtype=torch.bool)),
        v[base + 7],
        lanes(lane + 2, lane + 2 < seg8 + 8),
        torch.full((threads,), float(sum(1 << i for i in range(16) if i % 3 == 0))),
        (t >= 32).float(),  # any: lane 31 of the second warp
        torch.zeros(threads),
        torch.where(lane < 16, lanes(lane + 1, lane + 1 < 16), torch.full((threads,), -1.0)),
        torch.full((threads,), 16 + 1000 + 10000.0),
    ], dim=1)
    torch.testing.assert_close(o, expected, rtol=0, atol=0)


def test_barrier_orders_writes_before_reads(sim):
    threads = 96
    out = run_checked(sim, "neighbour_exchange",
                      lambda: _launch(sim, "neighbour_exchange", threads, 4 * threads))
    assert torch.equal(out[:threads], ((torch.arange(threads) + 1) % threads).float())


def test_missing_barrier_is_caught_as_a_race(sim):
    threads = 96
    with pytest.raises(AssertionError, match="order changes it"):
        run_checked(sim, "neighbour_exchange_no_barrier",
                    lambda: _launch(sim, "neighbour_exchange_no_barrier", threads, 4 * threads))


def test_read_of_unwritten_shared_memory_is_caught(sim):
    threads = 64
    with pytest.raises(AssertionError, match="poison changes it"):
        run_checked(sim, "unwritten_shared_read",
                    lambda: _launch(sim, "unwritten_shared_read", threads, 4 * (threads + 1)))


@pytest.mark.parametrize("name, threads, smem, message", [
    ("early_exit_before_barrier", 64, 0, "exited threads never reach"),
    ("divergent_barriers", 64, 0, "different __syncthreads"),
    ("shuffle_partial_warp", 48, 0, "past the end of the block's last warp"),
    ("shuffle_after_exit", 64, 0, "lane 7 of warp 0 is not at the warp collective"),
    ("noop", 1025, 0, "invalid block"),
    ("noop", 257, 0, "at most 256 threads"),  # launch_kernel's __launch_bounds__(kMaxThreads)
    ("noop_empty_grid", 32, 0, "invalid grid"),
    ("noop", 32, 228 * 1024, "CUDA error"),
])
def test_invalid_kernels_and_launches_raise(sim, name, threads, smem, message):
    with pytest.raises(RuntimeError, match=message):
        _launch(sim, name, threads, smem)
    # An abandoned block leaves the simulator usable.
    assert torch.equal(_launch(sim, "neighbour_exchange", 32, 128)[:32],
                       ((torch.arange(32) + 1) % 32).float())


def test_large_shared_memory_needs_and_gets_the_opt_in(sim):
    # launch_kernel opts in above 48 KB (cudaFuncSetAttribute), up to the device's limit.
    assert torch.equal(_launch(sim, "neighbour_exchange", 32, 200 * 1024)[:32],
                       ((torch.arange(32) + 1) % 32).float())


@pytest.mark.parametrize("name, smem", [("shared_out_of_bounds", 32 * 4),
                                        ("global_out_of_bounds", 0)])
def test_out_of_bounds_access_is_an_asan_error(name, smem):
    # ASan ends the process at the first error: run the kernel in a child process.
    code = ("import torch; from tests.cuda_harness import build; "
            "build.build(); "
            f"torch.ops.fastdw_cudasim.selftest({name!r}, torch.zeros(32), 32, {smem})")
    r = subprocess.run([sys.executable, "-c", code], cwd=build.ROOT, capture_output=True,
                       text=True, env=build.asan_environment(), timeout=300)
    assert r.returncode != 0 and "AddressSanitizer: heap-buffer-overflow" in r.stderr, \
        f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}"
