# %% [markdown]
# # 09 — From NumPy to Numba
#
# Every hot kernel of npgpt exists more than once, with one signature: a readable NumPy
# definition (`npgpt.kernels.reference`, the "numpy" backend), Numba kernels compiled for the CPU
# ("numba"), and numba.cuda kernels for a GPU ("cuda"). The layers ask the registry for the
# current backend's function, so switching is one line, and every fast kernel is tested equal
# to its reference. This notebook follows the kernel where the difference is largest —
# attention — from the NumPy formula to the FlashAttention algorithm: why it needs no
# $T \times T$ matrix (the online softmax), how it walks the matrix in tiles, the same call on
# the three backends, and what it buys in time and memory.
#
# (The CUDA kernels run in numba's CUDA simulator here — every GPU thread a Python thread on the
# CPU, correct and slow — unless `NUMBA_ENABLE_CUDASIM` was set otherwise before starting.)

# %%
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # read when numba is first imported: set it before

import inspect  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from npgpt import kernels  # noqa: E402
from npgpt.gradcheck import rel_error  # noqa: E402
from npgpt.kernels import reference  # noqa: E402
from npgpt.kernels.cpu.attention import ATTN_BC, ATTN_BR, _visible  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:        # PyTorch is optional: its column of the timing is left out
    torch = None

rng = np.random.default_rng(0)
np.set_printoptions(precision=4, suppress=True, linewidth=110)
backends = kernels.available_backends()
print("backends available here:", backends, "| current:", kernels.current_backend(),
      "| CUDA simulator:", os.environ["NUMBA_ENABLE_CUDASIM"] == "1")

# %% [markdown]
# ## 1. The reference, and its $T \times T$ matrix
#
# `reference.attention_forward` is the formula as written:
# $S = QK^\top/\sqrt D + M$, $A = \operatorname{softmax}(S)$, $O = AV$, with $A$ kept for the
# backward. $A$ has $B \cdot H \cdot T_q \cdot T_k$ entries: GPT-2 small (12 heads) on a batch of
# 8 sequences of 1,024 tokens holds 100 million of them *per layer* — 384 MiB of float32, written
# once and read several times, for an output of $B \cdot H \cdot T \cdot D$ numbers ($T/D = 16$
# times fewer at $T = 1024$, $D = 64$).

# %%
B, H, T, D = 1, 2, 256, 32
q, k, v = (rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(3))
out_ref, cache_ref = reference.attention_forward(q, k, v, causal=True)
print(type(cache_ref).__name__, {name: a.shape for name, a in cache_ref._asdict().items() if isinstance(a, np.ndarray)})
print(f"GPT-2 small, B = 8, T = 1024: {8 * 12 * 1024 * 1024 * 4 / 2**20:.0f} MiB of attention weights per layer")

# %% [markdown]
# ## 2. The online softmax
#
# The softmax of a row needs its maximum (for stability) and its sum before any weight is
# known — apparently the whole row at once. But both can be carried along while the keys are
# visited in blocks. After the keys $j < J$, keep
#
# $$
# m = \max_{j < J} s_j, \qquad \ell = \sum_{j < J} e^{s_j - m}, \qquad o = \sum_{j < J} e^{s_j - m}\, v_j .
# $$
#
# A new block of scores $s_j$, $j \in \mathcal B$, raises the maximum to
# $m' = \max(m, \max_{\mathcal B} s_j)$; every term summed so far was scaled by $e^{-m}$ and must
# now be scaled by $e^{-m'}$, so
#
# $$
# \ell' = e^{m - m'}\, \ell + \sum_{j \in \mathcal B} e^{s_j - m'}, \qquad
# o' = e^{m - m'}\, o + \sum_{j \in \mathcal B} e^{s_j - m'}\, v_j ,
# $$
#
# and the three invariants hold again for the keys $j < J + \lvert \mathcal B \rvert$. At the
# end, $o / \ell = \sum_j \operatorname{softmax}(s)_j\, v_j$ is the output row, and
# $\operatorname{lse} = m + \log \ell = \log \sum_j e^{s_j}$ is all the backward needs to
# recompute any weight, $a_j = e^{s_j - \operatorname{lse}}$. Per query row: three running
# quantities ($m$, $\ell$, and $o$ of size $D$) instead of a row of $T_k$ weights. One row, in
# plain NumPy, against the reference (notebook 02, section 7, does the same for whole blocks of
# queries):

# %%
row = 200                                                     # one query of head (0, 0)
s = (k[0, 0, :row + 1] @ q[0, 0, row]).astype(np.float64) / math.sqrt(D)   # its visible scores
m, l, o = -np.inf, 0.0, np.zeros(D)
for j0 in range(0, row + 1, 64):                              # blocks of 64 keys
    sb = s[j0:j0 + 64]                                        # the block's scores and values
    vb = v[0, 0, j0:j0 + len(sb)].astype(np.float64)
    m_new = max(m, sb.max())
    l = math.exp(m - m_new) * l + np.exp(sb - m_new).sum()
    o = math.exp(m - m_new) * o + np.exp(sb - m_new) @ vb
    m = m_new
print(f"online output vs reference: {rel_error(o / l, out_ref[0, 0, row]):.1e};  "
      f"lse {m + math.log(l):.5f} vs log(sum(exp(s))) {np.log(np.exp(s).sum()):.5f}")
assert rel_error(o / l, out_ref[0, 0, row]) < 1e-5
assert math.isclose(m + math.log(l), np.log(np.exp(s).sum()), rel_tol=1e-12)

# %% [markdown]
# ## 3. The Numba kernel: the same function, no $T \times T$ matrix
#
# On the "numba" backend, `attention_forward` runs this algorithm compiled (FlashAttention):
# for each block of queries, it walks the blocks of keys with the online softmax, and its cache
# keeps the row log-sum-exp `lse` $(B, H, T_q)$ in place of the weights. (For fewer than about
# a hundred keys the backend takes a plain path instead — products around a compiled softmax —
# which is faster when the matrix is small; the shapes here are past that.) Where the code is,
# and what it says about itself:

# %%
with kernels.backend("numba"):
    fused_forward = kernels.get("attention_forward")
    print(inspect.getsourcefile(fused_forward))
    print("\n".join(fused_forward.__doc__.splitlines()[:9]))
    start = time.perf_counter()
    out_nb, cache_nb = fused_forward(q, k, v, causal=True)
    print(f"\nfirst call (compiles the kernel, or loads it from numba's cache): {time.perf_counter() - start:.1f} s")

arrays = {name: a.shape for name, a in cache_nb._asdict().items() if isinstance(a, np.ndarray)}
print(type(cache_nb).__name__, arrays)
print(f"output vs reference: {rel_error(out_nb, out_ref):.1e}")
assert isinstance(cache_nb, reference.FlashAttentionCache)
assert not any(shape[-2:] == (T, T) for shape in arrays.values())          # no (Tq, Tk) array kept
assert rel_error(out_nb, out_ref) < 1e-5

scores = q.astype(np.float64) @ k.transpose(0, 1, 3, 2).astype(np.float64) / math.sqrt(D)
scores = np.where(reference.attention_mask(T, T, True, None), -np.inf, scores)
lse = np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)) + scores.max(-1)
print(f"the kernel's lse vs log-sum-exp of the scores: {rel_error(cache_nb.lse, lse):.1e}")
assert rel_error(cache_nb.lse, lse) < 1e-5

# %% [markdown]
# ## 4. Tiling
#
# The kernel never touches one score at a time: it computes a **tile** — a block of 64 queries
# against a block of 64 keys, $S_{ij} = Q_i K_j^\top$ — as one small matrix product whose
# operands sit in the CPU's fastest cache, and folds it into the 64 running rows with the
# online softmax. Each block of keys and values is read once per block of queries (not once per
# query), which is what makes the arithmetic, not the memory traffic, the bottleneck.
#
# With the causal mask, a tile whose keys all lie in the future of all its queries would be
# masked whole: the kernel does not visit it. With $n = T/64$ blocks per side it visits
# $n(n+1)/2$ of the $n^2$ tiles, a fraction $(n + 1)/(2n) \to \tfrac12$: causal attention costs
# about half of bidirectional attention. The tiles of a causal $T = 512$ attention, drawn with
# the kernel's own block sizes and its own bound `_visible` (how many keys a query may see):

# %%
def tiles(Tq, Tk, causal=True):
    """(n_q, n_k) grid: 0 skipped, 1 visited and partly masked (the diagonal), 2 visited whole."""
    grid = np.zeros((-(-Tq // ATTN_BR), -(-Tk // ATTN_BC)), dtype=int)
    for i, i0 in enumerate(range(0, Tq, ATTN_BR)):
        i1 = min(i0 + ATTN_BR, Tq)
        kend = _visible(i1 - 1, Tq, Tk, causal, Tk)      # the kernel's bound: later keys are hidden
        for j, j0 in enumerate(range(0, kend, ATTN_BC)):  # from the whole query block
            whole = min(j0 + ATTN_BC, Tk) <= _visible(i0, Tq, Tk, causal, Tk)   # its first query sees all
            grid[i, j] = 2 if whole else 1
    return grid

grid = tiles(512, 512)
n = grid.shape[0]
print(f"{(grid > 0).sum()} of {grid.size} tiles visited = {(grid > 0).mean():.3f};  "
      f"(n + 1) / (2n) = {(n + 1) / (2 * n):.3f}")
assert (grid > 0).sum() == n * (n + 1) // 2

fig, ax = plt.subplots(figsize=(4.2, 4.2))
ax.imshow(grid, cmap="Blues", vmin=0, vmax=2.4)
for (i, j), g in np.ndenumerate(grid):
    ax.text(j, i, {0: "skip", 1: "mask", 2: ""}[g], ha="center", va="center", fontsize=7, color="0.35")
ax.set_xticks(range(n), [f"{64 * j}" for j in range(n)], fontsize=7)
ax.set_yticks(range(n), [f"{64 * i}" for i in range(n)], fontsize=7)
ax.set_xlabel("key block (first key)")
ax.set_ylabel("query block (first query)")
ax.set_title("causal attention, T = 512, tiles of 64 x 64\n(dark: computed; mask: computed, partly masked)", fontsize=9)
plt.show()

# %% [markdown]
# ## 5. One call, three backends
#
# The same call, `kernels.get("attention_forward")(q, k, v, causal=..., key_pad=...)`, on each
# backend, against the reference: causal, and with a padding mask. The CUDA kernel is
# FlashAttention's idea in its simplest GPU form — one thread per query row, blocks of keys
# staged in shared memory — and its backward recomputes every weight from `lse`, as the Numba
# one does; under the simulator, small shapes keep it quick.

# %%
def compare(q, k, v, key_pad, names):
    ref, ref_cache = reference.attention_forward(q, k, v, causal=True, key_pad=key_pad)
    results = {}
    for name in names:
        with kernels.backend(name):
            out, cache = kernels.get("attention_forward")(q, k, v, causal=True, key_pad=key_pad)
        results[name] = (rel_error(out, ref), type(cache).__name__)
    return results

key_pad = np.zeros((2, 130), dtype=bool)
key_pad[1, 100:] = True
big = [rng.standard_normal((2, 2, 130, 16)).astype(np.float32) for _ in range(3)]
for name, (err, cache_type) in compare(*big, key_pad, ["numpy", "numba"]).items():
    print(f"{name:6s} T = 130, padded: {err:.1e}  ({cache_type})")
    assert err < 1e-5

if "cuda" in backends:
    small = [rng.standard_normal((2, 2, 13, 8)).astype(np.float32) for _ in range(3)]
    small_pad = np.zeros((2, 13), dtype=bool)
    small_pad[1, 9:] = True
    err, cache_type = compare(*small, small_pad, ["cuda"])["cuda"]
    print(f"cuda   T = 13, padded: {err:.1e}  ({cache_type})")
    assert err < 1e-5

    with kernels.backend("cuda"):                  # the backward, from lse, against the reference
        out, cache = kernels.get("attention_forward")(*small, causal=True)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        grads = kernels.get("attention_backward")(dout, cache)
    _, ref_cache = reference.attention_forward(*small, causal=True)
    for name, ours, ref in zip(("dq", "dk", "dv"), grads, reference.attention_backward(dout, ref_cache)):
        print(f"cuda   backward {name}: {rel_error(ours, ref):.1e}")
        assert rel_error(ours, ref) < 1e-5
else:
    print("the cuda backend is not available here (no GPU and no simulator): skipped")

# %% [markdown]
# ## 6. What it buys: time and memory
#
# The forward of causal attention, one sequence of 4 heads of size 64, float32, for growing
# $T$: the NumPy reference, the Numba kernel and, where PyTorch is installed,
# `torch.nn.functional.scaled_dot_product_attention` (best of 3 calls after a warm-up; on a busy
# machine the numbers wander, the trend does not). And the memory each keeps for its backward:
# the bytes of the arrays in its cache.

# %%
def best_time(fn, repeat=3):
    fn()                                                      # warm-up (and compilation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

def cache_bytes(cache):
    return sum(a.nbytes for a in cache if isinstance(a, np.ndarray))

lengths = [128, 256, 512, 1024]
timing = {"numpy (reference)": [], "numba (fused)": []}
memory = {"numpy (reference)": [], "numba (fused)": []}
if torch is not None:
    timing["torch SDPA"] = []
for T_ in lengths:
    q_, k_, v_ = (rng.standard_normal((1, 4, T_, 64)).astype(np.float32) for _ in range(3))
    for name, backend in (("numpy (reference)", "numpy"), ("numba (fused)", "numba")):
        with kernels.backend(backend):
            attention = kernels.get("attention_forward")
            timing[name].append(best_time(lambda: attention(q_, k_, v_, causal=True)))
            memory[name].append(cache_bytes(attention(q_, k_, v_, causal=True)[1]))
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(a) for a in (q_, k_, v_))
        with torch.no_grad():
            timing["torch SDPA"].append(best_time(lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)))
for name, ts in timing.items():
    print(f"{name:18s}", "  ".join(f"T={T_}: {1e3 * t:7.2f} ms" for T_, t in zip(lengths, ts)))
ratio_ref = memory["numpy (reference)"][-1] / memory["numpy (reference)"][-2]
ratio_nb = memory["numba (fused)"][-1] / memory["numba (fused)"][-2]
print(f"cache memory from T = 512 to 1024: reference x {ratio_ref:.2f}, fused x {ratio_nb:.2f}")
assert ratio_ref > 3.2 and ratio_nb < 2.1                   # quadratic against linear

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, ts in timing.items():
    axes[0].loglog(lengths, 1e3 * np.array(ts), "o-", label=name)
axes[0].set_title("causal attention forward, B = 1, H = 4, D = 64", fontsize=10)
axes[0].set_ylabel("milliseconds")
for name, mb in memory.items():
    axes[1].loglog(lengths, np.array(mb) / 2**20, "o-", label=name)
axes[1].set_title("memory kept for the backward", fontsize=10)
axes[1].set_ylabel("MiB")
for ax in axes:
    ax.set_xlabel("sequence length T")
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Checks run above
#
# * The online softmax of one row equals the reference's output, and its $m + \log \ell$ is the
#   row's log-sum-exp.
# * The Numba kernel's output equals the reference's; its cache holds no $(T_q, T_k)$ array and
#   its `lse` is the log-sum-exp of the masked scores.
# * A causal kernel visits $n(n+1)/2$ of $n^2$ tiles (by the kernel's loop bounds).
# * numpy, numba and (in the simulator) cuda give one function, causal and padded; the CUDA
#   backward from `lse` equals the reference backward.
# * The reference's cache grows 4× when $T$ doubles, the fused kernel's 2×.
#
# ## Exercises
#
# 1. `npgpt exercise start attention`: write the reference forward and backward; then write the
#    backward from `lse` alone (recompute $a = e^{s - \mathrm{lse}}$) and check both.
# 2. Extend section 2 to the backward: with $\operatorname{lse}$ and
#    $\delta = \sum_d \bar o_d\, o_d$ (notebook 02, section 7), compute $\bar q$ for one row
#    block by block, and compare with `reference.attention_backward`.
# 3. Time the Numba kernel causal and not causal at $T = 1024$. Is the ratio the $(n+1)/(2n)$ of
#    section 4? What else costs time besides the tiles?
# 4. Run `python -m npgpt bench` (or `benchmarks/bench_attention.py`) and read where the
#    crossover between the plain path and the fused kernel lies on your machine.
# 5. On a machine with an NVIDIA GPU, start Jupyter with `NUMBA_ENABLE_CUDASIM=0` and run
#    section 5 on the device. Then time it against the CPU: for these sizes, what dominates?
