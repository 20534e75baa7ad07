"""``python -m fastdw check``: a quick correctness battery over the backends this machine has.

Per backend: forward and backward against ``fastdw.reference`` (float64) in each dtype it
serves, ``torch.autograd.gradcheck`` and ``gradgradcheck`` in float64, NCHW vs channels_last
agreement (and the output keeping the input's memory format), non-contiguous inputs, and for
CUDA agreement with the CPU kernels. Backends this build or machine lacks are reported as
skipped. Exit code 1 if any check fails.
"""
from __future__ import annotations

import functools
import time
import traceback
from typing import Callable, List, Tuple

from . import command_parser

# (n, c, h, w, kh, kw, stride, padding, dilation, m): small, odd, and each path's edge cases
CONFIGS = [
    (2, 3, 9, 11, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 10, 8, 5, 5, (2, 2), (2, 2), (1, 1), 1),
    (2, 2, 10, 9, 3, 5, (1, 2), (1, 2), (2, 1), 1),
    (1, 2, 7, 6, 3, 3, (1, 1), (0, 0), (1, 1), 2),
    (1, 3, 12, 12, 7, 7, (1, 1), (3, 3), (1, 1), 1),
    (1, 2, 17, 15, 13, 13, (1, 1), (6, 6), (1, 1), 1),
    (1, 2, 9, 20, 1, 7, (1, 1), (0, 3), (1, 1), 1),
]


def add_parser(sub) -> None:
    p = command_parser(sub, "check", "quick gradcheck and consistency battery per backend",
                       __doc__, run)
    p.add_argument("--verbose", "-v", action="store_true", help="print every check, not only "
                                                                "failures and totals")


def _label(cfg) -> str:
    n, c, h, w, kh, kw, s, p, d, m = cfg
    return f"n{n}c{c}m{m} {h}x{w} k{kh}x{kw} s{s[0]}{s[1]} p{p[0]}{p[1]} d{d[0]}{d[1]}"


def _make(cfg, dtype, device, seed=0):
    import torch

    n, c, h, w, kh, kw, s, p, d, m = cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(c * m, 1, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(c * m, generator=g, dtype=torch.float64)
    return [t.to(device, dtype) for t in (x, wt, b)], dict(stride=s, padding=p, dilation=d)


class Battery:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.results: List[Tuple[str, str, bool, str]] = []

    def run(self, backend: str, name: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn() or ""
            ok = True
        except Exception as e:  # noqa: BLE001 - a failure is a result
            ok = False
            detail = f"{type(e).__name__}: {e}"
            if self.verbose:
                detail += "\n" + traceback.format_exc()
        self.results.append((backend, name, ok, detail))
        if self.verbose or not ok:
            print(f"  {'PASS' if ok else 'FAIL'}  {backend}: {name}" + (f"  ({detail})" if detail
                                                                         else ""), flush=True)


def _depthwise_checks(bat: Battery, backend: str, device, dtypes) -> None:
    import torch

    import fastdw
    from fastdw import accuracy, reference

    def expect(got, want, dtype, what):
        verdict = accuracy.compare(got, want, dtype)
        if not verdict.ok:
            raise AssertionError(verdict.message(what))
        return verdict.worst

    def fwd_bwd(cfg, dtype):
        def check():
            (x, w, b), kw = _make(cfg, dtype, device)
            conv = lambda x_, w_, b_: reference.depthwise_conv2d(x_, w_, b_, **kw)  # noqa: E731
            gy = torch.randn_like(conv(x, w, b), dtype=torch.float64).to(dtype)
            ref, *ref_g = accuracy.expected(conv, [x, w, b], gy)
            worst = 0.0
            for layout in ("nchw", "channels_last"):
                xs = x.contiguous(memory_format=torch.channels_last) if layout != "nchw" else x
                xs, ws, bs = (t.detach().requires_grad_() for t in (xs, w, b))
                y = fastdw.depthwise_conv2d(xs, ws, bs, **kw)
                if layout == "channels_last" and xs.shape[1] > 1 and not \
                        y.is_contiguous(memory_format=torch.channels_last):
                    raise AssertionError("channels_last input gave a non-channels_last output")
                worst = max(worst, expect(y, ref, dtype, f"{layout} output"))
                grads = torch.autograd.grad(y, (xs, ws, bs), gy.to(dtype))
                for name, got, want in zip(("grad_input", "grad_weight", "grad_bias"), grads,
                                           ref_g):
                    worst = max(worst, expect(got, want, dtype, f"{layout} {name}"))
            return f"worst error {worst:.2g}x its bound"
        return check

    for dtype in dtypes:
        for cfg in CONFIGS:
            bat.run(backend, f"fwd+bwd {str(dtype)[6:]} {_label(cfg)}", fwd_bwd(cfg, dtype))

    def grad_checks():
        for cfg in CONFIGS[:4]:
            (x, w, b), kw = _make(cfg, torch.float64, device)
            args = [t.requires_grad_() for t in (x, w, b)]
            f = lambda x, w, b: fastdw.depthwise_conv2d(x, w, b, **kw)  # noqa: E731
            torch.autograd.gradcheck(f, args, fast_mode=True)
            torch.autograd.gradgradcheck(f, args, fast_mode=True)
        return f"{len(CONFIGS[:4])} configs"
    bat.run(backend, "gradcheck + gradgradcheck float64", grad_checks)

    def noncontiguous():
        (x, w, b), kw = _make(CONFIGS[0], torch.float32, device)
        xp = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)[:, :, 1:, ::2]
        ref, = accuracy.expected(lambda *a: reference.depthwise_conv2d(*a, **kw), [xp, w, b])
        err = expect(fastdw.depthwise_conv2d(xp, w, b, **kw), ref, torch.float32, "strided view")
        return f"error {err:.2g}x its bound"
    bat.run(backend, "non-contiguous input view", noncontiguous)

    def empty_batch():
        (x, w, b), kw = _make(CONFIGS[0], torch.float32, device)
        y = fastdw.depthwise_conv2d(x[:0], w, b, **kw)
        want = reference.depthwise_conv2d(x[:0], w, b, **kw).shape
        if y.shape != want:
            raise AssertionError(f"shape {tuple(y.shape)}, expected {tuple(want)}")
    bat.run(backend, "batch 0", empty_batch)

    if device.type == "cuda" and "fastdw-cpu" in fastdw.available_backends():
        def cross_device():
            worst = 0.0
            for cfg in CONFIGS:
                (x, w, b), kw = _make(cfg, torch.float32, device)
                y_cuda = fastdw.depthwise_conv2d(x, w, b, **kw).cpu()
                y_cpu = fastdw.depthwise_conv2d(x.cpu(), w.cpu(), b.cpu(), **kw)
                # Each is within the bound of the float64 reference: twice the bound apart.
                ref, = accuracy.expected(lambda *a: reference.depthwise_conv2d(*a, **kw),
                                         [x.cpu(), w.cpu(), b.cpu()])
                ref = accuracy.Expected(y_cpu.double(), 2 * ref.magnitude, ref.terms)
                worst = max(worst, expect(y_cuda, ref, torch.float32, _label(cfg)))
            return f"worst difference {worst:.2g}x the bound"
        bat.run(backend, "agrees with fastdw-cpu (fp32)", cross_device)


def _separable_checks(bat: Battery, backend: str, device, dtypes) -> None:
    import torch

    from fastdw import accuracy, reference
    from fastdw.separable import depthwise_separable_conv2d

    cases = [((2, 8, 9, 11), 3, 1, 1, "relu6", 16), ((1, 12, 10, 10), 5, 2, 2, None, 7),
             ((1, 6, 8, 9), 3, 1, 1, "gelu", 5)]
    for dtype in dtypes:
        rounded = {torch.float32: "tf32" if device.type == "cuda" else None,
                   torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype)
        for (n, c, h, w), k, s, p, act, co in cases:
            def check(n=n, c=c, h=h, w=w, k=k, s=s, p=p, act=act, co=co):
                g = torch.Generator().manual_seed(1)
                # Rounded to the dtype first: the reference sees exactly the kernel's inputs.
                ts = [torch.randn(*sz, generator=g, dtype=torch.float64).to(dtype) for sz in
                      ((n, c, h, w), (c, 1, k, k), (c,), (co, c, 1, 1), (co,))]
                fn = functools.partial(reference.depthwise_separable_conv2d, stride=s,
                                       padding=p, activation=act)
                gy = torch.randn_like(fn(*ts).to(torch.float64))
                expected = accuracy.expected(fn, ts, gy, functools.partial(fn, bound=True))
                args = [t.detach().to(device, dtype).requires_grad_() for t in ts]
                y = depthwise_separable_conv2d(*args, stride=s, padding=p, activation=act)
                grads = torch.autograd.grad(y, args, gy.to(device, dtype))
                worst = 0.0
                for what, got, want in zip(("y", "gx", "g_dw_w", "g_dw_b", "g_pw_w", "g_pw_b"),
                                           (y,) + grads, expected):
                    verdict = accuracy.compare(got.cpu(), want, dtype, rounded)
                    if not verdict.ok:
                        raise AssertionError(verdict.message(what))
                    worst = max(worst, verdict.worst)
                return f"worst error {worst:.2g}x its bound"
            bat.run(backend, f"fwd+bwd {str(dtype)[6:]} {n}x{c}x{h}x{w} k{k} s{s} -> {co} {act}",
                    check)


def run(args, parser) -> int:
    import torch

    import fastdw
    from fastdw import backends

    start = time.perf_counter()
    found = backends.available_backends()
    print(f"fastdw check: fastdw {fastdw.__version__}, torch {torch.__version__}; backends in "
          f"this build: {', '.join(found)}")
    bat = Battery(args.verbose)
    plan = []
    cpu = torch.device("cpu")
    plan.append(("fastdw-cpu", "fastdw-cpu" in found, found.get("fastdw-cpu", "not built"),
                 lambda: _depthwise_checks(bat, "fastdw-cpu", cpu,
                                           [torch.float64, torch.float32, torch.bfloat16])))
    gpu_ok = "fastdw-cuda" in found and torch.cuda.is_available()
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    plan.append(("fastdw-cuda", gpu_ok, found.get("fastdw-cuda", "not built"),
                 lambda: _depthwise_checks(bat, "fastdw-cuda", gpu, [
                     torch.float64, torch.float32, torch.float16, torch.bfloat16])))
    try:
        import fastdw.separable  # noqa: F401
        have_sep = True
    except ImportError as e:
        have_sep, sep_why = False, f"fastdw.separable failed to import: {e}"
    if have_sep:
        device = gpu or cpu
        backend, sep_why = backends.separable_backend(device)
        name = "fastdw-triton" if backend == "triton" else \
            f"fastdw-separable ({backend}, {device.type})"
        dtypes = [torch.float32, torch.float16, torch.bfloat16] if backend == "triton" \
            else [torch.float64, torch.float32]
        plan.append((name, True, sep_why,
                     lambda: _separable_checks(bat, name, device, dtypes)))
    else:
        plan.append(("fastdw-separable", False, sep_why, None))
    for name, ok, why, fn in plan:
        if not ok:
            print(f"{name}: skipped ({why})")
            continue
        t0 = time.perf_counter()
        fn()
        mine = [r for r in bat.results if r[0] == name]
        passed = sum(r[2] for r in mine)
        verdict = "PASS" if passed == len(mine) else "FAIL"
        print(f"{name}: {verdict} {passed}/{len(mine)} checks ({time.perf_counter() - t0:.1f} s; "
              f"{why})", flush=True)
    failed = [r for r in bat.results if not r[2]]
    print(f"result: {'PASS' if not failed else 'FAIL'} ({len(bat.results) - len(failed)}/"
          f"{len(bat.results)} checks, {time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0
