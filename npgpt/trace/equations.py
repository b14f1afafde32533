"""The equation of a traced call, read from its Module's class docstring at run time.

The rule (the "docstring" row of npgpt/nn's conventions table): a Module's class docstring
displays its math under headers `forward:` and `backward:`, each followed by the lines indented
under it; a header may carry conditions on the module's attributes, which then say when it
applies:

    class Activation(Module):
        '''...
        forward (name="relu"):
            y = max(x, 0)
        backward (name="relu"):
            dx = dy where x > 0, else 0
        '''

The equation of a forward call is every line under every `forward` header that applies, in the
docstring's order (likewise for backward); the class is the first one of the module's class
and its bases whose docstring has such a header (GELU reads Activation's). Because the lines
are read from the docstring when the trace runs, the trace shows what the layer's page says:
they cannot drift apart (tests/test_trace.py checks every recorded line against it).
"""

from __future__ import annotations

import ast
import functools
import inspect
import operator
import re

PHASES = ("forward", "backward")
_HEADER = re.compile(r"^(?P<indent>\s*)(?P<phase>forward|backward)(?:\s*\((?P<cond>[^()]*)\))?:\s*$")


def parse_conditions(text: str | None) -> tuple:
    """'norm_first=True, name="gelu"' -> (("norm_first", True), ("name", "gelu"))."""
    if not text:
        return ()
    out = []
    for part in text.split(","):
        attr, eq, value = part.partition("=")
        if not eq or not attr.strip().replace(".", "").replace("_", "a").isalnum():
            raise ValueError(f"docstring header condition {part.strip()!r}: expected attribute=value")
        out.append((attr.strip(), ast.literal_eval(value.strip())))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def blocks(doc: str) -> tuple:
    """((phase, conditions, lines), ...): every header of a docstring and its indented lines."""
    lines = inspect.cleandoc(doc).splitlines()
    found, i = [], 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        i += 1
        if m is None:
            continue
        indent, body = len(m.group("indent")), []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            if not lines[i].strip():          # a blank line ends the block
                break
            body.append(lines[i].strip())
            i += 1
        found.append((m.group("phase"), parse_conditions(m.group("cond")), tuple(body)))
    return tuple(found)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def documented_class(cls) -> type | None:
    """The first class of cls's MRO whose docstring has a forward or backward header."""
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__")
        if isinstance(doc, str) and blocks(doc):
            return klass
    return None


def _applies(module, conditions) -> bool:
    for attr, value in conditions:
        try:
            if operator.attrgetter(attr)(module) != value:
                return False
        except AttributeError:
            return False
    return True


def equation(module, phase: str) -> list[str]:
    """The lines of module's docstring that state what its `phase` call computes ([] if none)."""
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}: expected one of {PHASES}")
    klass = documented_class(type(module))
    if klass is None:
        return []
    return [line for ph, cond, body in blocks(klass.__doc__) if ph == phase and _applies(module, cond)
            for line in body]
