"""The terminal view of a Trace: one table per phase, each row a module call, its equation below.

    print(render_terminal(trace))             # every call
    print(render_terminal(trace, depth=1))    # the model and its direct parts only (h.0, not h.0.attn)

forward    module (indented by nesting), type, input and output shapes, the output's mean, std,
           min and max, saturation (dead units, one-hot softmax rows), then the equation
backward   the incoming gradient's shape, the outgoing one's shape and norm, the gradient each
           parameter received from the call; then the gradient that flows into the residual
           stream below every block
optimizer  the clip (total norm, scale), the bias corrections, and per parameter |g|, |m|,
           the mean of sqrt(v_hat), |update|, |w| and |update| / |w|
With a comparison to PyTorch, a last column gives the largest difference of every tensor.
"""

from __future__ import annotations

from .step import Trace


def num(x, width: int = 9) -> str:
    """A number in `width` characters, 3 significant digits ("-" for None)."""
    if x is None:
        return "-".rjust(width)
    return f"{x:.3g}".rjust(width)


def shape(s) -> str:
    """"(2, 8, 16) float32" for a summary, "T=8" for a plain value, "-" for None."""
    if s is None:
        return "-"
    if "shape" in s:
        dims = ", ".join(map(str, s["shape"]))
        return f"({dims})" if s["shape"] else "scalar"
    if "value" in s:
        return repr(s["value"])
    return s.get("type", "?")


def _note(rec) -> str:
    words = {"dead": "dead", "one_hot": "one-hot", "dropped": "dropped"}
    return ", ".join(f"{words.get(k, k)} {v:.0%}" for k, v in rec.saturation.items())


def _diff(rec) -> str:
    vals = [d for d in (rec.diff or []) if d is not None]
    return num(max(vals)) if vals else "-".rjust(9)


def _first(items):
    return next((x for x in items if x is not None), None)


def _header(trace: Trace) -> list[str]:
    meta = trace.meta
    lines = [f"npgpt trace: {meta.get('description', meta.get('model', 'model'))}"]
    if meta.get("data"):
        lines.append(f"batch: {meta['data']}")
    lines.append(f"loss {meta['loss']:.6g}; {meta.get('parameters', 0):,} parameters; dtype "
                 f"{meta.get('dtype', '?')}; backend {meta.get('backend', '?')}")
    for note in meta.get("notes", ()):
        lines.append(f"note: {note}")
    return lines


def _visible(records, depth):
    return [r for r in records if depth is None or r.depth <= depth]


def _label(r) -> str:
    """The module's name, indented by nesting; a second call of one module says so."""
    return "  " * r.depth + r.name + (f" (call {r.call + 1})" if r.call else "")


def _widths(recs) -> tuple[int, int]:
    """The widths of the module and type columns: the longest entry, at least 28 and 18."""
    return (max([28] + [len(_label(r)) + 1 for r in recs]), max([18] + [len(r.kind) + 1 for r in recs]))


def _heading(phase: str, calls: list, shown: list, depth, order: str) -> str:
    """"forward: 33 calls in the order they ran", and how many --depth shows when it folds some."""
    folded = f" ({len(shown)} shown, --depth {depth})" if len(shown) < len(calls) else ""
    return f"{phase}: {len(calls)} calls in the order they ran{order}{folded}"


def _forward(trace: Trace, depth, compare: bool) -> list[str]:
    recs = _visible(trace.forward, depth)
    wm, wk = _widths(recs)
    cols = f"{'module':<{wm}} {'type':<{wk}} {'in':<14} {'out':<14} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}"
    lines = ["", _heading("forward", trace.forward, recs, depth, ""),
             cols + ("  torch diff" if compare else "") + "  note"]
    for r in recs:
        out = _first(r.outputs) or {}
        if out.get("shape") == []:                     # a scalar (the loss): its value alone
            out = {"shape": [], "mean": out.get("mean")}
        row = (f"{_label(r):<{wm}} {r.kind:<{wk}} {shape(_first(r.inputs)):<14} "
               f"{shape(out):<14} {num(out.get('mean'))} {num(out.get('std'))} {num(out.get('min'))} "
               f"{num(out.get('max'))}")
        lines.append(row + (f"  {_diff(r):>10}" if compare else "") + (f"  {_note(r)}" if r.saturation else ""))
        lines += [f"{'  ' * r.depth}    | {eq}" for eq in r.equation]
    return lines


def _backward(trace: Trace, depth, compare: bool) -> list[str]:
    recs = _visible(trace.backward, depth)
    wm, wk = _widths(recs)
    cols = f"{'module':<{wm}} {'type':<{wk}} {'dout':<14} {'dx':<14} {'|dx|':>9}"
    lines = ["", _heading("backward", trace.backward, recs, depth, " (the forward's, reversed)"),
             cols + ("  torch diff" if compare else "")]
    for r in recs:
        out = _first(r.outputs) or {}
        lines.append(f"{_label(r):<{wm}} {r.kind:<{wk}} {shape(_first(r.inputs)):<14} "
                     f"{shape(out) if out else '-':<14} {num(out.get('norm'))}"
                     + (f"  {_diff(r):>10}" if compare else ""))
        for name, g in r.params.items():
            lines.append(f"{'  ' * r.depth}    + d{name.rsplit('.', 1)[-1]:<18} {shape(g):<14} "
                         f"|grad| {num(g.get('norm')).strip()}   (into {name})")
        lines += [f"{'  ' * r.depth}    | {eq}" for eq in r.equation]
    return lines


def _residual(trace: Trace) -> list[str]:
    back = trace.blocks("backward")
    if not back:
        return []
    fwd = {(r.path, r.call): r for r in trace.blocks("forward")}
    lines = ["", "residual stream, block by block (backward order): the gradient flowing into the stream "
             "below each block", f"{'block':<16} {'|dx|':>9} {'std(dx)':>9} {'out std':>9}"]
    for r in back:
        n_calls = sum(1 for b in back if b.path == r.path)
        f = fwd.get((r.path, n_calls - 1 - r.call))
        dx = _first(r.outputs) or {}
        out_std = (_first(f.outputs) or {}).get("std") if f is not None else None
        lines.append(f"{r.name:<16} {num(dx.get('norm'))} {num(dx.get('std'))} {num(out_std)}")
    return lines


def _optimizer(trace: Trace, compare: bool) -> list[str]:
    opt = trace.optimizer
    if not opt:
        return []
    hyper, clip = opt["hyper"], opt["clip"]
    settings = ", ".join(f"{k} {v}" for k, v in hyper.items())
    lines = ["", f"optimizer: {opt['type']} step t={opt['step']}: {settings}"]
    total, scale = clip["total_norm"], clip["scale"]
    if clip["max_norm"]:
        did = f"scaled by {scale:.4g}" if scale < 1 else "left as they are"
        lines.append(f"clip: total gradient norm {total:.4g}, max {clip['max_norm']:g}: gradients {did}")
    else:
        lines.append(f"clip: off (total gradient norm {total:.4g})")
    first = opt["params"][0] if opt["params"] else {}
    if "bc1" in first:
        lines.append(f"bias corrections: 1 - beta1^t = {first['bc1']:.4g}, 1 - beta2^t = {first['bc2']:.4g}"
                     f"   (m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t))")
        lines.append("update = -lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * w)   (decay on matrices only)")
    lines.append(f"{'parameter':<30} {'shape':<12} {'|g|':>9} {'|m|':>9} {'sqrt(v^)':>9} "
                 f"{'|update|':>9} {'|w|':>9} {'upd/w':>9}" + ("  torch diff" if compare else ""))
    for p in opt["params"]:
        sh = "(" + ", ".join(map(str, p["shape"])) + ")"
        m = p.get("m", {}).get("norm")
        d = p.get("diff")
        lines.append(f"{p['name']:<30} {sh:<12} {num(p['grad'].get('norm'))} {num(m)} "
                     f"{num(p.get('sqrt_v_hat_mean'))} {num(p['update'].get('norm'))} "
                     f"{num(p['weight_norm'])} {num(p['ratio'])}"
                     + (f"  {num(max(d.values()) if d else None):>10}" if compare else ""))
    return lines


def _compare(trace: Trace) -> list[str]:
    c = trace.compare
    if not c:
        return []
    return ["", f"compared with PyTorch {c.get('torch', '')} ({c['dtype']}): largest difference "
            f"{c['max_diff']:.3g} over {c['tensors']} tensors (forward {c['forward']:.3g}, backward "
            f"{c['backward']:.3g}, parameter gradients {c['grads']:.3g}, the optimizer phase from "
            f"npgpt's gradients {c['weights']:.3g}); where: {c['where']}"]


def render_terminal(trace: Trace, depth: int | None = None) -> str:
    """The whole trace as text (see the module docstring); depth: show calls nested at most
    this deep (0: the model's own call only)."""
    compare = trace.compare is not None
    lines = (_header(trace) + _forward(trace, depth, compare) + _backward(trace, depth, compare)
             + _residual(trace) + _optimizer(trace, compare) + _compare(trace))
    return "\n".join(lines)
