"""npgpt.optim against torch.optim: SGD, AdamW, clip_grad_norm, schedules, state, runs.

The same parameters and the same random gradients go through npgpt and PyTorch for 10 steps;
every parameter is compared after every step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from npgpt import kernels, optim
from npgpt.nn.linear import Linear
from npgpt.nn.module import Parameter, flatten_parameters
from npgpt.optim.flat import BLOCK
from tests.helpers import assert_close

# Relative error allowed between npgpt and torch after each step, and why that size:
TOL = {
    # same formula, same order; the only differences are FMA contractions and the order of a
    # product or two inside torch's kernels: a few ulp (2e-16) per step, over 10 steps
    np.float64: 1e-12,
    # the same few ulp at float32 (6e-8)
    np.float32: 1e-6,
}

# (shape, decay): matrices decay, vectors do not, as the layers set it
SHAPES = [((4, 5), True), ((5,), False), ((3, 2, 4), True), ((7,), False)]
STEPS = 10


def make_params(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype), decay=d) for s, d in shapes]


def to_torch(params):
    return [torch.tensor(p.data.copy(), requires_grad=True) for p in params]


def torch_groups(params, tparams, weight_decay, **hyper):
    """torch param groups equivalent to npgpt's decay mask: p.decay False -> weight_decay 0."""
    decay = [t for p, t in zip(params, tparams) if p.decay]
    no_decay = [t for p, t in zip(params, tparams) if not p.decay]
    return [{"params": decay, "weight_decay": weight_decay, **hyper},
            {"params": no_decay, "weight_decay": 0.0, **hyper}]


def set_grads(params, tparams, rng):
    for p, t in zip(params, tparams):
        g = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad[...] = g
        t.grad = torch.from_numpy(g.copy())


def run_both(opt, topt, params, tparams, steps=STEPS, seed=1, schedule=None):
    """Step both optimizers on the same gradients; compare every parameter after every step."""
    rng = np.random.default_rng(seed)
    for step in range(1, steps + 1):
        if schedule is not None:
            opt.lr = schedule(step)
            for g in topt.param_groups:
                g["lr"] = schedule(step)
        set_grads(params, tparams, rng)
        opt.step()
        topt.step()
        for i, (p, t) in enumerate(zip(params, tparams)):
            assert_close(f"step {step} param {i} {p.shape}", p.data, t.detach().numpy(), TOL[p.dtype.type])


# -- SGD and AdamW against torch ---------------------------------------------------------------

SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch(kw, dtype):
    params = make_params(dtype)
    tparams = to_torch(params)
    kw = dict(kw)
    wd = kw.pop("weight_decay", 0.0)
    opt = optim.SGD(params, weight_decay=wd, **kw)
    topt = torch.optim.SGD(torch_groups(params, tparams, wd), foreach=False, **kw)
    run_both(opt, topt, params, tparams)


ADAMW_CASES = [
    dict(lr=1e-2, weight_decay=0.0),
    dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1),
    dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", ADAMW_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_adamw_matches_torch(kw, dtype):
    params = make_params(dtype)
    tparams = to_torch(params)
    kw = dict(kw)
    wd = kw.pop("weight_decay")
    opt = optim.AdamW(params, weight_decay=wd, **kw)
    topt = torch.optim.AdamW(torch_groups(params, tparams, wd), foreach=False, **kw)
    run_both(opt, topt, params, tparams)


def test_adamw_param_groups_and_schedule_match_torch():
    params = make_params(np.float64)
    tparams = to_torch(params)
    opt = optim.AdamW([{"params": params[:2], "lr": 1e-2, "weight_decay": 0.1},
                       {"params": params[2:], "lr": 1e-3, "weight_decay": 0.3}], betas=(0.9, 0.95))
    groups = (torch_groups(params[:2], tparams[:2], 0.1, lr=1e-2)
              + torch_groups(params[2:], tparams[2:], 0.3, lr=1e-3))
    topt = torch.optim.AdamW(groups, betas=(0.9, 0.95), foreach=False)
    run_both(opt, topt, params, tparams)
    # the schedule sets every group's lr, in both
    run_both(opt, topt, params, tparams, seed=2, schedule=optim.WarmupCosine(1e-2, 3, 10, 1e-3))


def test_mixed_dtypes_and_separate_parameters_are_one_run_each():
    params = make_params(np.float64)[:2] + make_params(np.float32, seed=5)[2:]
    tparams = to_torch(params)
    opt = optim.AdamW(params, weight_decay=0.1)
    assert [run.params for run in opt.runs] == [(p,) for p in params]
    topt = torch.optim.AdamW(torch_groups(params, tparams, 0.1), foreach=False)
    run_both(opt, topt, params, tparams)


def test_flattened_parameters_are_one_run_per_buffer_and_group():
    a, b = make_params(np.float64), make_params(np.float32, seed=5)
    flatten_parameters(a)
    flatten_parameters(b)
    assert len(optim.AdamW(a + b).runs) == 2                            # one per buffer
    groups = optim.AdamW([{"params": a[:3]}, {"params": a[3:] + b, "lr": 0.1}]).runs
    assert [len(run.params) for run in groups] == [3, 1, 4]            # a group ends a run
    assert len(optim.AdamW([a[0], a[2], a[3]]).runs) == 2              # a gap in memory ends one
    a[1].requires_grad = False
    assert [len(run.params) for run in optim.AdamW(a).runs] == [1, 2]  # a frozen gap ends one


@pytest.mark.parametrize("make", [
    lambda ps: optim.AdamW([{"params": ps[:3], "weight_decay": 0.1}, {"params": ps[3:], "lr": 1e-2}]),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
], ids=["adamw", "sgd"])
@pytest.mark.parametrize("backend", [b for b in kernels.available_backends() if b != "cuda"])
def test_runs_step_exactly_as_separate_parameters(make, backend):
    """One update call over a flat run (a fused kernel on the numba backend) gives the bits of
    one call per parameter, and the state_dict does not depend on the layout."""
    separate, flat = make_params(np.float32), make_params(np.float32)
    flatten_parameters(flat)
    with kernels.backend(backend):
        a, b = make(separate), make(flat)
        assert len(a.runs) == len(separate) and len(b.runs) < len(flat)
        steps_with(a, separate, np.random.default_rng(0), 4)
        steps_with(b, flat, np.random.default_rng(0), 4)
    for p, q in zip(separate, flat):
        assert p.data.tobytes() == q.data.tobytes()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    make(make_params(np.float32)).load_state_dict(sb)      # a flat state loads into separate ones


# -- clip_grad_norm ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "no-clip"])
def test_clip_grad_norm_matches_torch(max_norm, dtype):
    params = make_params(dtype)
    tparams = to_torch(params)
    set_grads(params, tparams, np.random.default_rng(3))
    before = [p.grad.copy() for p in params]
    total = optim.clip_grad_norm(params, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm, foreach=False)
    assert isinstance(total, float)
    assert_close("total norm", total, expected.item(), TOL[dtype])
    for i, (p, t) in enumerate(zip(params, tparams)):
        assert_close(f"clipped grad {i}", p.grad, t.grad.numpy(), TOL[dtype])
    if max_norm > total:
        assert all(np.array_equal(p.grad, b) for p, b in zip(params, before))


def test_clip_grad_norm_of_optimizer_uses_its_runs():
    params, copies = make_params(np.float32), make_params(np.float32)
    flatten_parameters(params)
    opt = optim.SGD(params, lr=0.1)
    assert len(opt.runs) == 1
    for p, c in zip(params, copies):
        p.grad[...] = c.grad[...] = np.random.default_rng(p.size).standard_normal(p.shape)
    assert optim.clip_grad_norm(opt, 0.5) == pytest.approx(optim.clip_grad_norm(copies, 0.5), rel=1e-12)
    for p, c in zip(params, copies):
        np.testing.assert_array_equal(p.grad, c.grad)


def test_clip_grad_norm_returns_non_finite_and_leaves_grads():
    params = make_params(np.float64)
    params[1].grad[2] = np.inf
    params[2].grad[...] = 1.0
    before = [p.grad.copy() for p in params]
    assert optim.clip_grad_norm(params, 1.0) == math.inf
    params[1].grad[2] = np.nan
    before[1][2] = np.nan
    assert math.isnan(optim.clip_grad_norm(params, 1.0))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.grad, b)


def test_clip_grad_norm_skips_frozen_and_counts_shared_once():
    a, b = make_params(np.float64, shapes=[((3,), False), ((2,), False)])
    a.grad[...], b.grad[...] = 3.0, 100.0
    b.requires_grad = False
    assert optim.clip_grad_norm([a, a, b], 1e9) == pytest.approx(math.sqrt(27.0), rel=1e-15)


# -- the clip folded into the step: what p.grad holds -------------------------------------------

FUSED_CASES = [(lambda ps: optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1), "AdamW"),
               (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1), "SGD")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [m for m, _ in FUSED_CASES], ids=[n for _, n in FUSED_CASES])
def test_step_with_grad_scale_equals_clip_then_step_bit_for_bit(make, dtype):
    """step(grad_scale=clip_coef(norm)) updates exactly as clip_grad_norm + step (and so as
    torch's clip_grad_norm_ + step), and leaves p.grad unscaled; zero_grad=True leaves 0."""
    fused, plain = make_params(dtype), make_params(dtype)
    flatten_parameters(fused)
    flatten_parameters(plain)
    opt_fused, opt_plain = make(fused), make(plain)
    tparams = to_torch(plain)
    topt = (torch.optim.AdamW(torch_groups(plain, tparams, 0.1), lr=1e-2, betas=(0.9, 0.95), foreach=False)
            if isinstance(opt_plain, optim.AdamW) else
            torch.optim.SGD(torch_groups(plain, tparams, 0.1), lr=0.1, momentum=0.9, foreach=False))
    rng = np.random.default_rng(4)
    for step in range(1, 6):
        grads = [rng.standard_normal(p.shape).astype(dtype) * 3 for p in plain]
        for f, p, t, g in zip(fused, plain, tparams, grads):
            f.grad[...] = p.grad[...] = g
            t.grad = torch.from_numpy(g.copy())
        norm = optim.grad_norm(opt_fused)
        assert norm == optim.clip_grad_norm(opt_plain, 1.0)            # the same norm
        torch.nn.utils.clip_grad_norm_(tparams, 1.0, foreach=False)
        coef = optim.clip_coef(norm, 1.0)
        assert coef < 1                                                # it clips
        zero = step % 2 == 0
        opt_fused.step(grad_scale=coef, zero_grad=zero)
        opt_plain.step()
        topt.step()
        for i, (f, p, t, g) in enumerate(zip(fused, plain, tparams, grads)):
            np.testing.assert_array_equal(f.data, p.data, err_msg=f"step {step} param {i}")
            assert_close(f"step {step} param {i} vs torch", f.data, t.detach().numpy(), TOL[dtype])
            np.testing.assert_array_equal(f.grad, 0 * g if zero else g)  # zeros, or as backward left it


def test_step_zero_grad_alone_and_default_step_leave_the_gradient_as_documented():
    params = make_params(np.float32)
    flatten_parameters(params)
    opt = optim.AdamW(params)
    for p in params:
        p.grad[...] = 2.0
    opt.step()                                   # torch's step: p.grad untouched
    assert all(np.all(p.grad == 2.0) for p in params)
    opt.step(zero_grad=True)                     # the step used the 2.0s, then zeroed them
    assert all(np.all(p.grad == 0) for p in params)


def test_grad_norm_changes_nothing_and_clip_coef_is_torchs():
    params = make_params(np.float64)
    rng = np.random.default_rng(0)
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    before = [p.grad.copy() for p in params]
    norm = optim.grad_norm(params)
    assert norm == pytest.approx(math.sqrt(sum((b ** 2).sum() for b in before)), rel=1e-14)
    assert all(np.array_equal(p.grad, b) for p, b in zip(params, before))
    assert optim.clip_coef(norm, 0.5) == 0.5 / (norm + 1e-6)
    assert optim.clip_coef(norm, 1e6) == 1.0
    assert optim.clip_coef(math.inf, 1.0) == 1.0 and optim.clip_coef(math.nan, 1.0) == 1.0
    with pytest.raises(ValueError, match="max_norm=0"):
        optim.clip_coef(norm, 0)
    with pytest.raises(ValueError, match="grad_scale=-1"):
        optim.AdamW(params).step(grad_scale=-1)


# -- schedules ---------------------------------------------------------------------------------

def test_warmup_cosine_key_points_and_monotonic():
    s = optim.WarmupCosine(max_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    assert s(1) == pytest.approx(1e-4)          # max_lr / warmup_steps: warming up from ~0
    assert s(10) == pytest.approx(1e-3)         # the end of the warmup: max_lr
    assert s(60) == pytest.approx(5.5e-4)       # the middle of the decay: (max + min) / 2
    assert s(110) == pytest.approx(1e-4) and s(111) == s(10_000) == 1e-4
    lrs = np.array([s(t) for t in range(1, 120)])
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[9:110]) < 0)
    assert np.all(np.diff(lrs[109:]) == 0)
    assert optim.WarmupCosine(1.0, 0, 10)(1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))


def test_noam_peaks_at_warmup_and_equals_the_formula():
    s = optim.Noam(d_model=512, warmup_steps=400, factor=2.0)
    lrs = np.array([s(t) for t in range(1, 4001)])
    assert int(np.argmax(lrs)) + 1 == 400
    assert s(400) == pytest.approx(2.0 / math.sqrt(512 * 400), rel=1e-15)
    for t in (1, 57, 400, 401, 3000):
        assert s(t) == pytest.approx(2.0 * 512 ** -0.5 * min(t ** -0.5, t * 400 ** -1.5), rel=1e-15)


def test_schedules_count_steps_from_one():
    for s in (optim.Constant(0.1), optim.WarmupCosine(1.0, 2, 5), optim.Noam(8, 4)):
        with pytest.raises(ValueError, match="step=0"):
            s(0)
        with pytest.raises(TypeError, match="step=1.5"):
            s(1.5)
    assert optim.Constant(0.1)(np.int64(7)) == 0.1


@pytest.mark.parametrize("make, match", [
    (lambda: optim.WarmupCosine(1.0, 10, 5), "total_steps=5"),
    (lambda: optim.WarmupCosine(1.0, 1, 5, min_lr=2.0), "min_lr=2.0"),
    (lambda: optim.WarmupCosine(-1.0, 1, 5), "max_lr=-1.0"),
    (lambda: optim.Noam(8, 0), "warmup_steps=0"),
    (lambda: optim.Constant(-0.1), "lr=-0.1"),
])
def test_schedule_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- state_dict --------------------------------------------------------------------------------

def steps_with(opt, params, rng, n):
    for _ in range(n):
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda ps: optim.SGD([{"params": ps[:2], "momentum": 0.9}, {"params": ps[2:]}], lr=0.1),
], ids=["adamw", "sgd-nesterov", "sgd-groups"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_state_dict_resume_is_bit_identical(make, dtype):
    params = make_params(dtype)
    opt = make(params)
    steps_with(opt, params, np.random.default_rng(0), 5)
    state = opt.state_dict()
    at_5 = [p.data.copy() for p in params]
    steps_with(opt, params, np.random.default_rng(1), 5)

    fresh = [Parameter(a.copy(), decay=p.decay) for a, p in zip(at_5, params)]
    resumed = make(fresh)
    resumed.load_state_dict(state)
    assert resumed.step_count == 5
    steps_with(resumed, fresh, np.random.default_rng(1), 5)
    for p, q in zip(params, fresh):
        assert p.data.tobytes() == q.data.tobytes()


def test_state_dict_holds_plain_values_and_copies():
    params = make_params(np.float64)
    opt = optim.AdamW(params, lr=1e-2)
    steps_with(opt, params, np.random.default_rng(0), 2)
    state = opt.state_dict()
    plain = (int, float, np.ndarray)
    for key, value in state.items():
        assert isinstance(key, str)
        items = value if isinstance(value, list) else [value]
        assert all(isinstance(x, plain) or (isinstance(x, list) and all(isinstance(y, float) for y in x))
                   for x in items), key
    m0 = state["m.0"].copy()
    steps_with(opt, params, np.random.default_rng(1), 1)
    np.testing.assert_array_equal(state["m.0"], m0)
    assert state["step"] == 2 and state["lr"] == [1e-2] and state["betas"] == [[0.9, 0.999]]


def test_state_survives_a_round_trip_through_numpy_types():
    """A checkpoint may hand lists back as arrays and ints as numpy scalars: loading accepts them."""
    params = make_params(np.float32)
    opt = optim.SGD([{"params": params[:2], "momentum": 0.9}, {"params": params[2:]}], lr=0.1,
                    nesterov=False, weight_decay=0.1)
    steps_with(opt, params, np.random.default_rng(0), 2)
    state = {k: np.asarray(v) if isinstance(v, (list, int)) else v for k, v in opt.state_dict().items()}
    fresh = [Parameter(p.data.copy(), decay=p.decay) for p in params]
    resumed = optim.SGD([{"params": fresh[:2], "momentum": 0.9}, {"params": fresh[2:]}], lr=0.5)
    resumed.load_state_dict(state)
    assert resumed.lr == 0.1 and resumed.step_count == 2
    steps_with(opt, params, np.random.default_rng(1), 2)
    steps_with(resumed, fresh, np.random.default_rng(1), 2)
    assert all(p.data.tobytes() == q.data.tobytes() for p, q in zip(params, fresh))
    with pytest.raises(KeyError, match="momentum_started"):
        resumed.load_state_dict({k: v for k, v in state.items() if k != "momentum_started"})


def test_load_state_dict_restores_hyper_parameters():
    a, b = make_params(np.float64), make_params(np.float64)
    src = optim.AdamW(a, lr=3e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.2)
    dst = optim.AdamW(b)
    dst.load_state_dict(src.state_dict())
    assert dst.param_groups[0]["betas"] == (0.8, 0.9) and dst.lr == 3e-3
    assert dst.param_groups[0]["eps"] == 1e-6 and dst.param_groups[0]["weight_decay"] == 0.2


@pytest.mark.parametrize("edit, error, match", [
    (lambda s: s.update({"m.2": np.zeros((2, 3, 4))}), ValueError, "'m.2'"),
    (lambda s: s.pop("v.1"), KeyError, "v.1"),
    (lambda s: s.update({"group_sizes": [3]}), ValueError, "group_sizes"),
    (lambda s: s.update({"betas": [[1.5, 0.9]]}), ValueError, "betas"),
    (lambda s: s.update({"step": -1}), ValueError, "step"),
])
def test_load_bad_state_raises_and_changes_nothing(edit, error, match):
    params = make_params(np.float64)
    opt = optim.AdamW(params, lr=1e-2)
    steps_with(opt, params, np.random.default_rng(0), 3)
    good = opt.state_dict()
    bad = opt.state_dict()
    bad["lr"] = [0.5]
    bad["m.0"] = bad["m.0"] + 1.0
    edit(bad)
    with pytest.raises(error, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after.keys() == good.keys()
    for k in good:
        assert np.array_equal(np.asarray(after[k]), np.asarray(good[k])), k


def test_load_state_of_the_other_optimizer_is_an_error():
    params = make_params(np.float64)
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    steps_with(sgd, params, np.random.default_rng(0), 1)
    with pytest.raises(KeyError, match="beta"):
        optim.AdamW(make_params(np.float64)).load_state_dict(sgd.state_dict())


# -- frozen, shared and flat parameters --------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda ps: optim.AdamW(ps, weight_decay=0.5),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.5),
], ids=["adamw", "sgd"])
def test_frozen_params_never_change(make):
    params = make_params(np.float32)
    frozen = params[2]
    frozen.requires_grad = False
    frozen_bytes = frozen.data.tobytes()
    opt = make(params)
    assert len(opt.params) == 3 and frozen.data.base is None
    for _ in range(3):
        for p in params:
            p.grad[...] = 1.0
        opt.step()
    assert frozen.data.tobytes() == frozen_bytes
    assert not np.array_equal(params[0].data, make_params(np.float32)[0].data)


def test_freezing_or_unfreezing_after_construction_is_an_error():
    params = make_params(np.float64)
    params[3].requires_grad = False
    opt = optim.AdamW(params)
    params[0].requires_grad = False
    with pytest.raises(RuntimeError, match="frozen after the optimizer was built"):
        opt.step()
    params[0].requires_grad = True
    params[3].requires_grad = True
    with pytest.raises(RuntimeError, match="trainable now"):
        opt.step()


def test_shared_param_is_stored_and_updated_once():
    params = make_params(np.float64)
    tied = [params[0], params[1], params[0], params[2], params[3], params[1]]
    flatten_parameters(params)
    opt = optim.AdamW(tied, lr=1e-2, weight_decay=0.1)
    assert len(opt.params) == 4 and [run.data.size for run in opt.runs] == [sum(p.size for p in params)]
    tparams = to_torch(params)
    topt = torch.optim.AdamW(torch_groups(params, tparams, 0.1, lr=1e-2), foreach=False)
    run_both(opt, topt, params, tparams, steps=3)


def test_building_an_optimizer_moves_no_array():
    """Arrays taken from p.data / p.grad before the optimizer was built stay the parameters'."""
    rng = np.random.default_rng(0)
    lin = Linear(3, 4, dtype="float64", rng=rng)
    w, dw, b = lin.weight.data, lin.weight.grad, lin.bias.data
    opt = optim.AdamW(lin.parameters(), lr=0.1)
    optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)                # a second one: nothing moves
    assert lin.weight.data is w and lin.weight.grad is dw and lin.bias.data is b
    x, dout = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    lin.forward(x)
    lin.backward(dout)                                # the layer adds into p.grad, which is dw
    assert_close("dw", dw, x.reshape(-1, 3).T @ dout.reshape(-1, 4), 1e-14)
    w_before = w.copy()
    opt.step()                                        # the optimizer writes into p.data, which is w
    assert not np.array_equal(w, w_before)
    assert_close("forward after step", lin.forward(x), x @ w + b, 1e-14)
    opt.zero_grad()
    assert not dw.any() and not lin.bias.grad.any()


def test_runs_are_views_of_the_flat_buffer():
    rng = np.random.default_rng(0)
    lin = Linear(3, 4, dtype="float64", rng=rng)
    data, grad = flatten_parameters(lin)
    opt = optim.AdamW(lin.parameters(), lr=0.1)
    (run,) = opt.runs
    assert np.shares_memory(run.data, data) and run.data.size == data.size == 16
    assert np.shares_memory(run.grad, grad) and run.decay.tolist() == [True] * 12 + [False] * 4
    lin.forward(rng.standard_normal((2, 3)))
    lin.backward(np.ones((2, 4)))
    assert run.grad[12:].tolist() == [2.0] * 4        # what the layer wrote, seen through the run


def test_flattening_after_building_makes_the_optimizer_fail_loudly():
    params = make_params(np.float64)
    opt = optim.AdamW(params)
    flatten_parameters(params)
    with pytest.raises(RuntimeError, match="no longer the array it was"):
        opt.step()


# -- the update functions ----------------------------------------------------------------------

def test_adamw_update_equals_the_formula_across_chunks():
    n = 2 * BLOCK + 17                    # more than one chunk, a ragged last one
    rng = np.random.default_rng(0)
    p, g, m = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    v, decay = rng.random(n), rng.random(n) < 0.5
    lr, b1, b2, eps, wd, t = 1e-2, 0.9, 0.95, 1e-8, 0.1, 7
    m_ref = b1 * m + (1 - b1) * g
    v_ref = b2 * v + (1 - b2) * g * g
    p_ref = np.where(decay, p * (1 - lr * wd), p)
    p_ref = p_ref - lr / (1 - b1 ** t) * m_ref / (np.sqrt(v_ref) / math.sqrt(1 - b2 ** t) + eps)
    g0 = g.copy()
    assert optim.adamw_update(p, g, m, v, decay, lr, b1, b2, eps, wd, t) is None
    assert_close("m", m, m_ref, 1e-15)
    assert_close("v", v, v_ref, 1e-15)
    assert_close("p", p, p_ref, 1e-14)
    assert np.array_equal(g, g0)


def test_sgd_leaves_gradients_alone():
    params = make_params(np.float64)
    opt = optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    for p in params:
        p.grad[...] = 1.5
    opt.step()
    opt.step()
    assert all(np.all(p.grad == 1.5) for p in params)


# -- bad input ---------------------------------------------------------------------------------

P = make_params(np.float64)


@pytest.mark.parametrize("make, error, match", [
    (lambda: optim.AdamW(P, lr=-1e-3), ValueError, "lr=-0.001"),
    (lambda: optim.AdamW(P, lr=float("nan")), ValueError, "lr=nan"),
    (lambda: optim.AdamW(P, betas=(1.0, 0.999)), ValueError, r"betas\[0\]=1.0"),
    (lambda: optim.AdamW(P, betas=(0.9, -0.1)), ValueError, r"betas\[1\]=-0.1"),
    (lambda: optim.AdamW(P, betas=(0.9,)), ValueError, "betas"),
    (lambda: optim.AdamW(P, eps=0.0), ValueError, "eps=0.0"),
    (lambda: optim.AdamW(P, weight_decay=-0.1), ValueError, "weight_decay=-0.1"),
    (lambda: optim.AdamW([]), ValueError, "params is empty"),
    (lambda: optim.AdamW([P[0], np.zeros(3)]), TypeError, r"params\[1\] is a ndarray"),
    (lambda: optim.AdamW(np.zeros(3)), TypeError, "params is a ndarray"),
    (lambda: optim.AdamW([{"params": P, "weight_deacy": 0.1}]), ValueError, "weight_deacy"),
    (lambda: optim.AdamW([{"params": P[:2]}, {"params": P[1:]}]), ValueError, "one group"),
    (lambda: optim.AdamW([{"params": P[:2]}, {"params": [], "lr": 0.1}]), ValueError, "empty"),
    (lambda: optim.SGD(P, lr=-0.1), ValueError, "lr=-0.1"),
    (lambda: optim.SGD(P, lr=0.1, momentum=-0.5), ValueError, "momentum=-0.5"),
    (lambda: optim.SGD(P, lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda: optim.SGD(P, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening"),
    (lambda: optim.SGD([Parameter(np.zeros(2), requires_grad=False)], lr=0.1), ValueError, "frozen"),
    (lambda: optim.clip_grad_norm(P, 0.0), ValueError, "max_norm=0.0"),
])
def test_bad_input_is_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_lr_set_later_is_an_error():
    opt = optim.AdamW(make_params(np.float64))
    with pytest.raises(ValueError, match="lr=-1"):
        opt.lr = -1
    opt.param_groups[0]["lr"] = float("inf")
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr=inf"):
        opt.step()
