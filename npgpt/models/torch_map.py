"""The Transformer's parameters under the names and layouts of a PyTorch model.

The PyTorch model: src_embed (nn.Embedding), tgt_embed (nn.Embedding), transformer
(torch.nn.Transformer, batch_first=True) and generator (nn.Linear), with npgpt's sinusoidal
positions and sqrt(d_model) embedding scale applied around them, so the two compute the same
function. Two differences of layout:

    torch keeps a Linear's weight (out, in), npgpt (in, out): transposed
    torch fuses q, k, v into in_proj_weight (3d, d): npgpt's self-attention c_attn is all of it
    (transposed), cross-attention q_proj rows 0..d-1 and kv_proj rows d..3d-1

With share_embeddings the torch model's tgt_embed.weight and generator.weight are the same
tensor as src_embed.weight (aliases), which npgpt lists once.

    layout(cfg)                       {npgpt name: (torch name, rows, transpose)}
    to_npgpt(cfg, shapes, arrays)     {torch name: array} -> {npgpt name: array}, checked
    to_torch(cfg, shapes, arrays)     the inverse
where shapes = {npgpt name: shape} of the model's parameters.
"""

from __future__ import annotations

import numpy as np

from ..config import TransformerConfig

SUBLAYERS = {"self_attn.c_attn": ("self_attn.in_proj", None), "self_attn.c_proj": ("self_attn.out_proj", None),
             "ff.c_fc": ("linear1", None), "ff.c_proj": ("linear2", None)}


def _cross(d: int) -> dict:
    return {"cross_attn.q_proj": ("multihead_attn.in_proj", slice(0, d)),
            "cross_attn.kv_proj": ("multihead_attn.in_proj", slice(d, 3 * d)),
            "cross_attn.c_proj": ("multihead_attn.out_proj", None)}


def layout(cfg: TransformerConfig) -> dict:
    """{npgpt name: (torch name, rows, transpose)}: where each parameter sits in the PyTorch
    model; rows: the slice of the torch tensor's rows it is (None: all of it)."""
    d = cfg.d_model
    out = {"src_embed.weight": ("src_embed.weight", None, False)}
    if not cfg.share_embeddings:
        out["tgt_embed.weight"] = ("tgt_embed.weight", None, False)
        out["generator.weight"] = ("generator.weight", None, True)
    out["generator.bias"] = ("generator.bias", None, False)
    for stack, n, norms, subs in (("encoder", cfg.n_encoder_layers, (1, 2), SUBLAYERS),
                                  ("decoder", cfg.n_decoder_layers, (1, 2, 3), {**SUBLAYERS, **_cross(d)})):
        for i in range(n):
            ours, theirs = f"{stack}.{i}.", f"transformer.{stack}.layers.{i}."
            for name, (tname, rows) in subs.items():
                sep = "_" if tname.endswith("in_proj") else "."
                out[f"{ours}{name}.weight"] = (f"{theirs}{tname}{sep}weight", rows, True)
                out[f"{ours}{name}.bias"] = (f"{theirs}{tname}{sep}bias", rows, False)
            for k in norms:
                for w in ("weight", "bias"):
                    out[f"{ours}norm{k}.{w}"] = (f"{theirs}norm{k}.{w}", None, False)
        for w in ("weight", "bias"):
            out[f"{stack}_norm.{w}"] = (f"transformer.{stack}.norm.{w}", None, False)
    return out


def aliases(cfg: TransformerConfig) -> dict:
    """{torch name: torch name it is tied to}: with share_embeddings, tgt_embed.weight and
    generator.weight are src_embed.weight. A torch state_dict lists each alias; named
    parameters (and so gradients) list only src_embed.weight."""
    if not cfg.share_embeddings:
        return {}
    return {"tgt_embed.weight": "src_embed.weight", "generator.weight": "src_embed.weight"}


def torch_shapes(cfg: TransformerConfig, shapes: dict) -> dict:
    """{torch name: shape} of the PyTorch model's parameters, from npgpt's {name: shape}."""
    out = {}
    for name, (tname, rows, transpose) in layout(cfg).items():
        shape = tuple(shapes[name])[::-1] if transpose else tuple(shapes[name])
        if rows is not None:                          # a row block of in_proj: (3d, ...)
            shape = (3 * cfg.d_model,) + shape[1:]
        out[tname] = shape
    for alias, target in aliases(cfg).items():
        out[alias] = out[target]
    return out


def to_npgpt(cfg: TransformerConfig, shapes: dict, arrays: dict) -> dict:
    """{torch name: array or tensor} -> {npgpt name: np.ndarray}, for weights or gradients.

    Every torch name of the layout must be there, nothing else (aliases of a tied table may
    be, and must then equal the table); shapes are checked. Errors name the keys.
    """
    arrays = {k: _to_numpy(v) for k, v in arrays.items()}
    where, tied = layout(cfg), aliases(cfg)
    wanted = {tname for tname, _, _ in where.values()}
    missing = sorted(wanted - set(arrays))
    unexpected = sorted(set(arrays) - wanted - set(tied))
    if missing or unexpected:
        raise ValueError(f"torch state dict for Transformer: missing keys {missing or 'none'}; "
                         f"unexpected keys {unexpected or 'none'}")
    expected = torch_shapes(cfg, shapes)
    for tname, a in arrays.items():
        if a.shape != expected[tname]:
            raise ValueError(f"torch state dict: {tname!r} has shape {a.shape}, expected {expected[tname]}")
    for alias, target in tied.items():
        if alias in arrays and not np.array_equal(arrays[alias], arrays[target]):
            raise ValueError(f"torch state dict: {alias!r} differs from {target!r}, but "
                             f"share_embeddings=True ties them into one table")
    out = {}
    for name, (tname, rows, transpose) in where.items():
        a = arrays[tname] if rows is None else arrays[tname][rows]
        out[name] = np.ascontiguousarray(a.T if transpose else a)
    return out


def to_torch(cfg: TransformerConfig, shapes: dict, arrays: dict) -> dict:
    """{npgpt name: array} -> {torch name: np.ndarray}: the inverse of to_npgpt (in_proj rebuilt
    from q_proj and kv_proj; aliases of a tied table included)."""
    where = layout(cfg)
    missing = sorted(set(where) - set(arrays))
    unexpected = sorted(set(arrays) - set(where))
    if missing or unexpected:
        raise ValueError(f"npgpt_to_torch: missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}")
    expected = torch_shapes(cfg, shapes)
    out = {}
    for name, (tname, rows, transpose) in where.items():
        a = np.asarray(arrays[name])
        a = a.T if transpose else a
        if rows is None:
            out[tname] = np.ascontiguousarray(a)
        else:
            out.setdefault(tname, np.zeros(expected[tname], dtype=a.dtype))[rows] = a
    for alias, target in aliases(cfg).items():
        out[alias] = out[target].copy()
    return out


def _to_numpy(a) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (without importing torch)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)
