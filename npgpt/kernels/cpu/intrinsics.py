"""The math a compiled loop calls per element, written so that LLVM can vectorise the loop.

Numba compiles `math.exp(x)` or `math.tanh(x)` to one scalar libm call per element (there is no
vector math library here), and Python's `max` to a compare-and-select the vectoriser skips. A
softmax or a GELU written with them runs at a fraction of the speed of the products around it.
So, for the kernels of this package:

    _exp_nonpos(x)   exp(x) for x <= 0 (all a max-subtracted softmax needs): float32 as a
                     polynomial with bit tricks, float64 as libm's exp
    _tanh(x)         float32 as Eigen's rational approximation, float64 as libm's tanh
    _maxnum(a, b)    LLVM's maxnum, which becomes one vector max instruction

and the compile options that let their loops vectorise (`_FM`, `_FE`). float64 keeps libm
everywhere, so the float64 tests hold every kernel to its reference at 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# fastmath: only reassociation (so a sum may be split over SIMD lanes) and fused multiply-add.
# No "nnan"/"ninf": the attention masks are -inf and must stay so. The reference tests pass with it.
_FM = {"reassoc", "contract"}

# The row and element-wise kernels' options. error_model="numpy": Numba's default tests every
# float division for a zero divisor, to raise ZeroDivisionError as Python does, and that branch
# keeps LLVM from vectorising the loop; with the numpy model a division is IEEE's (x / 0 = inf),
# as in NumPy.
_FE = dict(fastmath=_FM, error_model="numpy", cache=True)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 `bits` (a free register reinterpretation)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return sig, codegen


def _exp_nonpos(x):
    """exp(x) for x <= 0 (all a max-subtracted softmax needs); exp(-inf) = 0. Typed by `overload`."""
    raise NotImplementedError("only callable from compiled code")


@overload(_exp_nonpos, jit_options={"fastmath": _FM})
def _exp_nonpos_impl(x):
    """float64: math.exp. float32: a polynomial with bit tricks instead of a libm call.

        exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
        exp(r) ~ 1 + r + r^2/2! + ... + r^7/7!       (truncation error < 1e-8 on that interval)
        2^n    = the float whose exponent bits are n + 127 (built from an integer, no call)
    Below ln(2^-126) ~ -87.3 (the smallest normal float32) the result is 0, so is exp(-inf);
    exp(NaN) is NaN (a NaN score or logit must not vanish into a 0).
    Relative error ~1e-7, a float32 ulp or two: the reference tests (1e-5) pass.
    """
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: math.exp(x)

    def exp32(x):
        lo = np.float32(-87.33654)
        xc = x if x > lo else lo
        n = np.floor(xc * np.float32(1.442695041) + np.float32(0.5))            # round(x / ln 2)
        r = xc - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)    # x - n ln 2 (two parts)
        p = np.float32(1.0 / 5040)
        p = p * r + np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        two_n = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
        return p * two_n if x >= lo else (np.float32(0.0) if x < lo else x)   # exp(NaN) = NaN
    return exp32


def _tanh(x):
    """tanh(x), typed by `overload`: libm in float64, a rational function in float32."""
    raise NotImplementedError("only callable from compiled code")


@overload(_tanh, jit_options={"fastmath": {"contract"}, "error_model": "numpy"})
def _tanh_impl(x):
    """float64: math.tanh (libm: the NumPy form's np.tanh to an ulp, so float64 stays 1e-12 equal).

    float32: Eigen's rational approximation (generic_fast_tanh_float), which vectorises:
        tanh(x) ~ x P(x^2) / Q(x^2),   P of degree 6, Q of degree 3 in x^2, x clamped to +-7.905
        tanh(x) = +-1 exactly for |x| >= 9 (where float32's tanh rounds to 1)
    The exact +-1 matters to the GELU's derivative, whose (1 - t^2) term is multiplied by ~x^3:
    with 1 - 2.4e-7 at x = -12 (the clamped value) dx was off by 5e-5. Max absolute (and
    relative) error 3.9e-7 over [-12, 12] and down to 1e-30, against float64 np.tanh (np.tanh
    in float32: 6e-8); as fast as numpy's own SIMD tanh, where math.tanh would be a libm call
    per element.
    """
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: math.tanh(x)

    def tanh32(x):
        c = np.float32(7.90531110763549805)
        xc = x if x < c else c
        xc = xc if xc > -c else -c
        x2 = xc * xc
        p = np.float32(-2.76076847742355e-16)
        p = p * x2 + np.float32(2.00018790482477e-13)
        p = p * x2 + np.float32(-8.60467152213735e-11)
        p = p * x2 + np.float32(5.12229709037114e-08)
        p = p * x2 + np.float32(1.48572235717979e-05)
        p = p * x2 + np.float32(6.37261928875436e-04)
        p = p * x2 + np.float32(4.89352455891786e-03)
        q = np.float32(1.19825839466702e-06)
        q = q * x2 + np.float32(1.18534705686654e-04)
        q = q * x2 + np.float32(2.26843463243900e-03)
        q = q * x2 + np.float32(4.89352518554385e-03)
        r = xc * p / q
        one = np.float32(1.0) if x > 0 else np.float32(-1.0)
        return r if abs(x) < np.float32(9.0) else one     # |x| >= 9: tanh rounds to +-1 in float32
    return tanh32


@intrinsic
def _maxnum(typingctx, a, b):
    """max(a, b) as LLVM's maxnum, which the vectoriser turns into one vector max over 16 lanes
    (Python's max() compiles to a compare and a select that stays scalar). A NaN argument is
    ignored (the other is returned): the sums that follow a max still see the NaN
    (exp(NaN - m) = NaN), so a NaN logit still gives a NaN loss."""
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)
    return sig, codegen
