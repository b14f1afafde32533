"""The trace as one self-contained HTML page: inline CSS, JavaScript and SVG, nothing fetched.

    write_html(trace, "trace.html")          # or render_html(trace) -> str

The page shows the forward and the backward as trees of collapsible modules (<details>: a click
on a module folds it; buttons expand or collapse all, or open the tree to a depth), each with
its shapes, summary statistics, saturation, its equation and a small histogram of its output
(forward: the activations; backward: the gradient it sends back, and of every gradient its
parameters receive). Then the gradient flowing into the residual stream at every block, and the
optimizer's table: per parameter |g|, |m|, sqrt(v_hat), the update's histogram and the
update-to-weight ratio on a log scale. The histograms are drawn by the page's script from the
counts the trace keeps (npgpt.trace.stats.summary).
"""

from __future__ import annotations

import html
import json
import math

from ..files import write_atomic
from .step import Trace
from .terminal import num, shape

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:12px 20px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:22px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#444;margin:2px 0}.note{color:#a55}.controls{margin:10px 0}.controls button,select{margin-right:6px}
details.module{margin-left:18px;border-left:1px solid #e4e4e4;padding-left:6px}
details.module>summary{cursor:pointer;padding:2px 0;white-space:nowrap;list-style-position:outside}
summary .name{font-weight:600;font-family:ui-monospace,monospace}summary .kind{color:#666;margin:0 6px}
summary .shape{font-family:ui-monospace,monospace;color:#225}summary .stat{color:#555;margin-left:8px;font-size:12px}
summary .sat{color:#b35;margin-left:8px;font-size:12px}summary .diff{color:#275;margin-left:8px;font-size:12px}
pre.eq{margin:2px 0 4px 18px;color:#333;background:#f7f7f2;padding:3px 6px;font-size:12px;white-space:pre-wrap}
.param{margin-left:18px;font-size:12px;font-family:ui-monospace,monospace;color:#333}
svg.hist{vertical-align:middle;margin-left:8px;background:#fafafa;border:1px solid #eee}
svg.hist rect{fill:#4a7bb7}svg.hist.grad rect{fill:#c0584a}
table{border-collapse:collapse;font-size:12px}td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
td:first-child,th:first-child{text-align:left;font-family:ui-monospace,monospace}
svg.bar rect{fill:#7a5cb0}
"""

SCRIPT = """
(function(){
  const data = JSON.parse(document.getElementById('hist-data').textContent);
  const NS = 'http://www.w3.org/2000/svg';
  document.querySelectorAll('svg.hist').forEach(function(svg){
    const h = data[svg.dataset.key];
    if(!h){return;}
    const W = +svg.getAttribute('width'), H = +svg.getAttribute('height');
    const top = Math.max.apply(null, h.counts) || 1, bw = W / h.counts.length;
    h.counts.forEach(function(c, i){
      const r = document.createElementNS(NS, 'rect'), bh = c ? Math.max(1, (H - 2) * c / top) : 0;
      r.setAttribute('x', (i * bw).toFixed(2)); r.setAttribute('width', Math.max(bw - 0.6, 0.6).toFixed(2));
      r.setAttribute('y', (H - bh).toFixed(2)); r.setAttribute('height', bh.toFixed(2));
      svg.appendChild(r);
    });
    const t = document.createElementNS(NS, 'title');
    t.textContent = 'histogram of ' + h.counts.reduce(function(a, b){return a + b;}, 0) +
                    ' values from ' + h.min.toPrecision(3) + ' to ' + h.max.toPrecision(3);
    svg.appendChild(t);
  });
  const all = function(){return document.querySelectorAll('details.module');};
  document.getElementById('expand').onclick = function(){all().forEach(function(d){d.open = true;});};
  document.getElementById('collapse').onclick = function(){all().forEach(function(d){d.open = false;});};
  document.getElementById('depth').onchange = function(e){
    const limit = +e.target.value;
    all().forEach(function(d){d.open = +d.dataset.depth < limit;});
  };
})();
"""


def _e(text) -> str:
    return html.escape(str(text))


class _Page:
    """Builds the page's body, collecting the histograms its script draws."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.hists: dict = {}

    def hist(self, summary: dict | None, grad: bool = False, width: int = 90, height: int = 22) -> str:
        if not summary or "hist" not in summary:
            return ""
        key = f"h{len(self.hists)}"
        self.hists[key] = {"counts": summary["hist"], "min": summary["min"], "max": summary["max"]}
        return (f'<svg class="hist{" grad" if grad else ""}" data-key="{key}" width="{width}" '
                f'height="{height}" role="img"></svg>')

    def module(self, rec, children: str) -> str:
        out = next((o for o in rec.outputs if o is not None), None) or {}
        stats = ""
        if out.get("shape") == [] and "mean" in out:
            stats = f"value {num(out['mean']).strip()}"
        elif rec.phase == "forward" and "std" in out:
            stats = f"mean {num(out['mean']).strip()} std {num(out['std']).strip()} " \
                    f"[{num(out['min']).strip()}, {num(out['max']).strip()}]"
        elif "norm" in out:
            stats = f"|dx| {num(out['norm']).strip()}"
        sat = ", ".join(f"{k.replace('_', '-')} {v:.0%}" for k, v in rec.saturation.items())
        diffs = [d for d in rec.diff or [] if d is not None]
        inp = next((i for i in rec.inputs if i is not None), None)
        summary = (f'<summary><span class="name">{_e(rec.name)}</span><span class="kind">{_e(rec.kind)}</span>'
                   f'<span class="shape">{_e(shape(inp))} &rarr; {_e(shape(out) if out else "-")}</span>'
                   f'<span class="stat">{_e(stats)}</span>'
                   + (f'<span class="sat">{_e(sat)}</span>' if sat else "")
                   + (f'<span class="diff">torch diff {max(diffs):.2g}</span>' if diffs else "")
                   + self.hist(out, grad=rec.phase == "backward") + "</summary>")
        eq = f'<pre class="eq">{_e(chr(10).join(rec.equation))}</pre>' if rec.equation else ""
        params = "".join(f'<div class="param">d{_e(name)} {_e(shape(g))} |grad| {num(g.get("norm")).strip()}'
                         f'{self.hist(g, grad=True, width=60, height=16)}</div>'
                         for name, g in rec.params.items() if rec.phase == "backward" and g)
        return (f'<details class="module" data-path="{_e(rec.path)}" data-depth="{rec.depth}" open>'
                f"{summary}{eq}{params}{children}</details>")

    def tree(self, records) -> str:
        """Nested <details>, from records in the order the calls began (depth tells nesting)."""
        def build(i, depth):
            parts = []
            while i < len(records) and records[i].depth >= depth:
                rec, i = records[i], i + 1
                children, i = build(i, rec.depth + 1)
                parts.append(self.module(rec, children))
            return "".join(parts), i
        return build(0, 0)[0]

    def residual(self) -> str:
        rows = "".join(f"<tr><td>{_e(r.name)}</td><td>{num((r.outputs[0] or {}).get('norm')).strip()}</td>"
                       f"<td>{self.hist(r.outputs[0], grad=True)}</td></tr>"
                       for r in self.trace.blocks("backward") if r.outputs)
        return (f"<h2>residual stream</h2><p>The gradient flowing into the residual stream below each "
                f"block, in backward order.</p><table><tr><th>block</th><th>|dx|</th><th>histogram</th>"
                f"</tr>{rows}</table>") if rows else ""

    def optimizer(self) -> str:
        opt = self.trace.optimizer
        if not opt:
            return ""
        clip = opt["clip"]
        head = (f"<h2>optimizer</h2><p>{_e(opt['type'])} step t={opt['step']}: "
                + _e(", ".join(f"{k} {v}" for k, v in opt["hyper"].items()))
                + f". Total gradient norm {clip['total_norm']:.4g}, max {clip['max_norm']:g}, "
                  f"scale {clip['scale']:.4g}.</p>")
        rows = []
        for p in opt["params"]:
            ratio = p.get("ratio")
            rows.append(f"<tr><td>{_e(p['name'])}</td><td>{_e(shape(p['grad']))}</td>"
                        f"<td>{num(p['grad'].get('norm')).strip()}</td><td>{num(p.get('m', {}).get('norm')).strip()}</td>"
                        f"<td>{num(p.get('sqrt_v_hat_mean')).strip()}</td><td>{num(p['update'].get('norm')).strip()}"
                        f"{self.hist(p['update'], width=60, height=16)}</td><td>{num(ratio).strip()} {_ratio_bar(ratio)}</td></tr>")
        return (head + "<table><tr><th>parameter</th><th>shape</th><th>|g|</th><th>|m|</th><th>sqrt(v&#770;)</th>"
                "<th>|update|</th><th>|update| / |w| (log scale)</th></tr>" + "".join(rows) + "</table>")


def _ratio_bar(ratio) -> str:
    """A bar whose length is log10(ratio) from 1e-6 (empty) to 1 (full): 20 px a decade."""
    if not ratio:
        return ""
    width = max(1.0, min(120.0, 20 * (6 + math.log10(ratio))))
    return (f'<svg class="bar" width="120" height="10"><title>log10 = {math.log10(ratio):.2f}</title>'
            f'<rect x="0" y="1" height="8" width="{width:.1f}"></rect></svg>')


def render_html(trace: Trace) -> str:
    """The page (see the module docstring) as a string."""
    page = _Page(trace)
    meta = trace.meta
    depth = max((r.depth for r in trace.records), default=0)
    options = "".join(f'<option value="{d}"{" selected" if d == depth + 1 else ""}>{d}</option>'
                      for d in range(depth + 2))          # the last: every module open, as loaded
    notes = "".join(f'<p class="meta note">note: {_e(n)}</p>' for n in meta.get("notes", ()))
    body = (f"<h1>npgpt trace</h1><p class=\"meta\">{_e(meta.get('description', meta.get('model')))}</p>"
            f"<p class=\"meta\">{_e(meta.get('data', ''))}</p><p class=\"meta\">loss {meta['loss']:.6g}; "
            f"{meta.get('parameters', 0):,} parameters; {_e(meta.get('dtype', ''))}; backend "
            f"{_e(meta.get('backend', '?'))}</p>{notes}"
            '<div class="controls"><button id="expand">expand all</button><button id="collapse">collapse all'
            f'</button>open to depth <select id="depth">{options}</select></div>'
            f'<h2>forward</h2><div id="forward">{page.tree(trace.forward)}</div>'
            f'<h2>backward</h2><div id="backward">{page.tree(trace.backward)}</div>'
            + page.residual() + page.optimizer())
    data = json.dumps(page.hists).replace("</", "<\\/")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>npgpt trace: '
            f'{_e(meta.get("model", ""))}</title><style>{CSS}</style></head><body>{body}'
            f'<script type="application/json" id="hist-data">{data}</script><script>{SCRIPT}</script>'
            f"</body></html>\n")


def write_html(trace: Trace, path) -> None:
    """Write render_html(trace) to path, atomically."""
    write_atomic(path, render_html(trace).encode("utf-8"))
