"""Check the CUDA kernels on a GPU: equal to the reference, and timed against the CPU and torch.

    python benchmarks/cuda_check.py                 # on a machine with an NVIDIA GPU (a minute or two)
    python benchmarks/cuda_check.py --repeats 3 --skip-cpu
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_check.py --tiny     # the script itself, no GPU

CI has no GPU: the tests run the kernels under numba's simulator on tiny shapes. This is the
check on the device itself, on the shapes this project's models use. For each kernel and shape:

  check   npgpt.kernels.cuda against kernels/reference.py, in float64 (relative error at most
          1e-12) and in float32 (at most 1e-5), the tests' measure max|a - b| / max(|a| + |b|);
          attention compares out, dq, dk and dv. Any mismatch makes the run exit 1.
  time    float32, median of --repeats calls in milliseconds, after a first call reported apart
          (for cuda it compiles the kernels):
            cuda        npgpt.kernels.cuda as a layer calls it: copies to and from the GPU included
            kernel      the same kernels on arrays already on the GPU: the arithmetic alone
            numba       npgpt.kernels.cpu (the Numba CPU backend) on this machine's cores
            torch cpu   torch.matmul / scaled_dot_product_attention, backward by autograd
            torch cuda  the same on the GPU, when torch sees one (synchronized after each call)
          attention is one forward plus one backward.
Prints one table (markdown); exits 0 when every check passed, 1 on a mismatch, 2 when numba.cuda
cannot run a kernel here (the reason is printed).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import common  # noqa: F401  (imports torch before npgpt: see common.py)
import numpy as np
from common import markdown_table, time_call, torch

from npgpt.kernels import cuda, reference

try:
    from npgpt.kernels import cpu
except Exception:                     # numba's CPU target missing: no numba column
    cpu = None

TOL = {np.float64: 1e-12, np.float32: 1e-5}

# (name, a shape, b shape): the products of this project's models
MATMUL = [
    ("baby GPT qkv (B*T=768, C=128)", (768, 128), (128, 384)),
    ("GPT-2 small MLP (B*T=2048)", (2048, 768), (768, 3072)),
    ("square 1024", (1024, 1024), (1024, 1024)),
    ("batched att @ v (64 heads)", (64, 256, 256), (64, 256, 64)),
]
# (name, B, H, Tq, Tk, D, causal, padded keys per row)
ATTENTION = [
    ("causal T=256", 8, 8, 256, 256, 64, True, 0),
    ("causal T=1024", 8, 8, 1024, 1024, 64, True, 0),
    ("cross 200 x 300, padding", 8, 8, 200, 300, 64, False, 37),
    ("decode Tq=1, Tk=1024", 8, 8, 1, 1024, 64, True, 0),
]
# --tiny: shapes the simulator runs in seconds, the same code paths
TINY_MATMUL = [("tiny 2-D", (5, 7), (7, 6)), ("tiny batched", (2, 3, 5), (2, 5, 4))]
TINY_ATTENTION = [("tiny causal", 1, 2, 5, 5, 3, True, 0), ("tiny cross, padding", 2, 1, 3, 6, 2, False, 2)]


def rel_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b))))) if a.size else 0.0


def ms(timing: dict | None) -> float | None:
    return None if timing is None else timing["median"] * 1e3


# ------------------------------------------------------------------------------------------ matmul

def matmul_inputs(a_shape, b_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)


def check_matmul(a_shape, b_shape) -> dict:
    errors = {}
    for dtype in (np.float64, np.float32):
        a, b = matmul_inputs(a_shape, b_shape, dtype)
        errors[dtype] = rel_error(cuda.matmul(a, b), reference.matmul(a, b))
    return errors


def matmul_kernel_only(a, b):
    """A function running matmul's GEMM kernel on device-resident (nb, M, K) @ (nb, K, N) arrays."""
    K, N = a.shape[-1], b.shape[-1]
    A = np.ascontiguousarray(a.reshape(-1, *a.shape[-2:]) if b.ndim > 2 else a.reshape(1, -1, K))
    B = np.ascontiguousarray(b.reshape(-1, K, N))
    nb, rows = A.shape[0], A.shape[1]
    tile = cuda.GEMM_TILE
    kernel = cuda._gemm_kernel(tile, a.dtype)
    dA, dB = cuda.cuda.to_device(A), cuda.cuda.to_device(B)
    dC = cuda.cuda.device_array((nb, rows, N), dtype=a.dtype)
    grid = (-(-rows // tile), -(-N // tile), min(nb, cuda.MAX_GRID_Y))

    def run():
        kernel[grid, (tile, tile)](dA, dB, dC)
        cuda.cuda.synchronize()
    return run


def time_matmul(a_shape, b_shape, repeats, skip_cpu) -> dict:
    a, b = matmul_inputs(a_shape, b_shape, np.float32)
    row = {}
    t = time_call(lambda: cuda.matmul(a, b), repeats)
    row["first call s"], row["cuda ms"] = t["first"], ms(t)
    row["kernel ms"] = ms(time_call(matmul_kernel_only(a, b), repeats))
    if cpu is not None and not skip_cpu:
        row["numba ms"] = ms(time_call(lambda: cpu.matmul(a, b), repeats))
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        if not skip_cpu:
            row["torch cpu ms"] = ms(time_call(lambda: torch.matmul(ta, tb), repeats))
        if torch.cuda.is_available():
            ga, gb = ta.cuda(), tb.cuda()

            def on_gpu():
                torch.matmul(ga, gb)
                torch.cuda.synchronize()
            row["torch cuda ms"] = ms(time_call(on_gpu, repeats))
    return row


# --------------------------------------------------------------------------------------- attention

def attention_inputs(B, H, Tq, Tk, D, padded, dtype, seed=0):
    rng = np.random.default_rng(seed)
    q, dout = (rng.standard_normal((B, H, Tq, D)).astype(dtype) for _ in range(2))
    k, v = (rng.standard_normal((B, H, Tk, D)).astype(dtype) for _ in range(2))
    key_pad = None
    if padded:
        key_pad = np.zeros((B, Tk), dtype=bool)
        key_pad[:, Tk - padded:] = True                  # the last keys of every row are padding
    return q, k, v, dout, key_pad


def check_attention(B, H, Tq, Tk, D, causal, padded) -> dict:
    errors = {}
    for dtype in (np.float64, np.float32):
        q, k, v, dout, key_pad = attention_inputs(B, H, Tq, Tk, D, padded, dtype)
        out, cache = cuda.attention_forward(q, k, v, causal=causal, key_pad=key_pad)
        ref_out, ref_cache = reference.attention_forward(q, k, v, causal=causal, key_pad=key_pad)
        got = (out, *cuda.attention_backward(dout, cache))
        want = (ref_out, *reference.attention_backward(dout, ref_cache))
        errors[dtype] = max(rel_error(x, y) for x, y in zip(got, want))   # worst of out, dq, dk, dv
    return errors


def attention_kernels_only(q, k, v, dout, key_pad, causal):
    """A function running the three attention kernels on device-resident arrays."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    br = cuda.ATTN_BR
    bc = cuda._staged_rows(cuda.ATTN_BC, D, q.dtype.itemsize)
    forward, backward_dq, backward_dkdv = cuda._attention_kernels(br, bc, D, q.dtype)
    dev = cuda.cuda
    qd, kd, vd, dod = (dev.to_device(x) for x in (q, k, v, dout))
    bias = dev.to_device(reference.key_bias(key_pad, B, Tk, q.dtype))
    out, dq, dk, dv = (dev.device_array_like(x) for x in (q, q, k, v))
    lse, delta = (dev.device_array((B, H, Tq), dtype=q.dtype) for _ in range(2))
    scale = q.dtype.type(1 / math.sqrt(D))

    def run():
        forward[(B * H, -(-Tq // br)), br](qd, kd, vd, bias, causal, scale, out, lse)
        backward_dq[(B * H, -(-Tq // br)), br](qd, kd, vd, out, dod, lse, bias, causal, scale, dq, delta)
        backward_dkdv[(B * H, -(-Tk // br)), br](qd, kd, vd, dod, lse, delta, bias, causal, scale, dk, dv)
        dev.synchronize()
    return run


def torch_attention_step(q, k, v, dout, key_pad, causal, device):
    """One forward + backward of torch's scaled_dot_product_attention on `device`, same masks."""
    tq, tk, tv = (torch.from_numpy(x).to(device).requires_grad_(True) for x in (q, k, v))
    tdout = torch.from_numpy(dout).to(device)
    Tq, Tk = q.shape[2], k.shape[2]
    mask = reference.attention_mask(Tq, Tk, causal, key_pad)                  # True: hidden
    keep = None if mask is None else torch.from_numpy(~np.broadcast_to(mask, (q.shape[0], 1, Tq, Tk)))
    keep = None if keep is None else keep.to(device)
    use_is_causal = causal and Tq == Tk and key_pad is None                     # torch's fast path

    def step():
        for t in (tq, tk, tv):
            t.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv, attn_mask=None if use_is_causal else keep, is_causal=use_is_causal)
        out.backward(tdout)
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def time_attention(B, H, Tq, Tk, D, causal, padded, repeats, skip_cpu) -> dict:
    q, k, v, dout, key_pad = attention_inputs(B, H, Tq, Tk, D, padded, np.float32)

    def step(backend):
        def run():
            out, cache = backend.attention_forward(q, k, v, causal=causal, key_pad=key_pad)
            return backend.attention_backward(dout, cache)
        return run
    row = {}
    t = time_call(step(cuda), repeats)
    row["first call s"], row["cuda ms"] = t["first"], ms(t)
    row["kernel ms"] = ms(time_call(attention_kernels_only(q, k, v, dout, key_pad, causal), repeats))
    if cpu is not None and not skip_cpu:
        row["numba ms"] = ms(time_call(step(cpu), repeats))
    if torch is not None:
        if not skip_cpu:
            row["torch cpu ms"] = ms(time_call(torch_attention_step(q, k, v, dout, key_pad, causal, "cpu"),
                                               repeats))
        if torch.cuda.is_available():
            row["torch cuda ms"] = ms(time_call(torch_attention_step(q, k, v, dout, key_pad, causal, "cuda"),
                                                repeats))
    return row


# -------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (median reported)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: runs under the simulator")
    parser.add_argument("--skip-cpu", action="store_true", help="no numba and torch-cpu timings")
    args = parser.parse_args(argv)
    if cuda.SIMULATOR and not args.tiny:
        print("NUMBA_ENABLE_CUDASIM=1: numba.cuda is the simulator, which would take hours at these "
              "shapes. Run with NUMBA_ENABLE_CUDASIM=0 on a GPU machine, or add --tiny.")
        return 2
    try:
        cuda.check_available()
    except RuntimeError as e:
        print(e)
        return 2
    device = "the simulator" if cuda.SIMULATOR else cuda.cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else device
    print(f"device: {device}; python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch is not None else '(not installed)'}; "
          f"tiles: GEMM {cuda.GEMM_TILE}, attention {cuda.ATTN_BR} rows x {cuda.ATTN_BC} keys", flush=True)
    cases = [("matmul", name, (a, b)) for name, a, b in (TINY_MATMUL if args.tiny else MATMUL)]
    cases += [("attention fwd+bwd", name, spec) for name, *spec in (TINY_ATTENTION if args.tiny else ATTENTION)]
    rows, failed = [], []
    for kernel, name, spec in cases:
        t = time.perf_counter()
        if kernel == "matmul":
            errors = check_matmul(*spec)
            row = time_matmul(*spec, args.repeats, args.skip_cpu)
        else:
            errors = check_attention(*spec)
            row = time_attention(*spec, args.repeats, args.skip_cpu)
        ok = all(errors[dt] <= TOL[dt] for dt in errors)
        if not ok:
            failed.append(f"{kernel} {name}")
        rows.append({"kernel": kernel, "shape": name, "float64 error": errors[np.float64],
                     "float32 error": errors[np.float32], "check": "pass" if ok else "FAIL", **row})
        print(f"  {kernel} {name}: {'pass' if ok else 'FAIL'} ({time.perf_counter() - t:.1f} s)", flush=True)
    columns = ["kernel", "shape", "float64 error", "float32 error", "check", "cuda ms", "kernel ms",
               "numba ms", "torch cpu ms", "torch cuda ms", "first call s"]
    formats = {"float64 error": "{:.1e}", "float32 error": "{:.1e}", "first call s": "{:.2f}",
               **{c: "{:.3f}" for c in columns if c.endswith(" ms")}}
    print()
    print(markdown_table(columns, rows, formats))
    print(f"\ntolerances: float64 {TOL[np.float64]:.0e}, float32 {TOL[np.float32]:.0e} (relative error, "
          f"worst of out, dq, dk, dv for attention); times: float32, median of {args.repeats}")
    if failed:
        print(f"\nMISMATCH against the reference: {', '.join(failed)}")
        return 1
    print(f"\nall {len(rows)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
