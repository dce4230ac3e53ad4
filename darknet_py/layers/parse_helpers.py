"""Small pieces shared by several layer modules.

* :class:`DefaultsLog` and the ``loud_*`` readers mirror Darknet's non-quiet ``option_find_int`` /
  ``option_find_float`` / ``option_find_str`` (``option_list.c``), which print
  ``key: Using default '...'`` when a key is missing. The lines are kept so a layer can add them
  to its table text exactly where Darknet prints them.
* :class:`SoftmaxTree`, :func:`read_tree`, :func:`read_map` read Darknet's hierarchy (``9k.tree``)
  and class map files (``tree.c`` ``read_tree``, ``utils.c`` ``read_map``) relative to the current
  directory, as Darknet does; a missing file is a :class:`~darknet_py.errors.CfgError` naming the
  cfg line (Darknet crashes).
* :func:`group_softmax` is the vectorised equivalent of Darknet's ``softmax_tree`` loop (one
  softmax per run of sibling classes).
* :func:`resolve_from` reads the ``from=`` index of ``[sam]`` / ``[scale_channels]``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ..formats.cfg import Section
from ..errors import CfgError


class DefaultsLog(list):
    """The ``key: Using default '...'`` lines a section produced, in reading order."""


def loud_int(section: Section, key: str, default: int, log: DefaultsLog) -> int:
    """``option_find_int``: like ``Section.int`` but records Darknet's default notice."""
    if not section.has(key):
        log.append(f"{key}: Using default '{default:d}'")
    return section.int(key, default)


def loud_float(section: Section, key: str, default: float, log: DefaultsLog) -> float:
    """``option_find_float`` (the notice prints the default with ``%lf``)."""
    if not section.has(key):
        log.append(f"{key}: Using default '{default:f}'")
    return section.float(key, default)


def loud_str(section: Section, key: str, default: Optional[str], log: DefaultsLog) -> Optional[str]:
    """``option_find_str``: no notice when the default is NULL (``None``)."""
    if not section.has(key) and default is not None:
        log.append(f"{key}: Using default '{default}'")
    return section.str(key, default)


def option_line(section: Section, key: str) -> int:
    for o in section.options:
        if o.key == key:
            return o.line
    return section.line


def resolve_from(section: Section, ctx, key: str = "from") -> int:
    """The single earlier layer named by ``from=`` (negative = relative), as ``atoi`` reads it."""
    value = section.int(key)
    return ctx.resolve(section, key, value)


# --------------------------------------------------------------------------- hierarchy files
@dataclass
class SoftmaxTree:
    """Darknet's ``tree`` struct as ``read_tree`` fills it.

    ``group_offset``/``group_size`` describe runs of consecutive lines with the same parent; like
    Darknet, a first line whose parent is not -1 yields an empty group 0. ``child`` (the group whose
    members have node ``i`` as parent, -1 for leaves) is not filled by AlexeyAB's ``read_tree``;
    it is computed here for decoders that walk the hierarchy.
    """

    path: str
    name: List[str] = field(default_factory=list)
    parent: List[int] = field(default_factory=list)
    group: List[int] = field(default_factory=list)
    group_offset: List[int] = field(default_factory=list)
    group_size: List[int] = field(default_factory=list)
    leaf: List[int] = field(default_factory=list)
    child: List[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.name)

    @property
    def groups(self) -> int:
        return len(self.group_size)


def _open_relative(section: Section, key: str, path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CfgError(
            f"[{section.type}] {key}={path}: cannot open the {what} ({e.strerror}); Darknet reads "
            f"it relative to the current directory, which is {os.getcwd()}",
            file=section.file, line=option_line(section, key), value=path) from None
    return data.decode("utf-8", errors="replace")


def _lines(text: str) -> List[str]:
    # fgetl: one entry per '\n'-terminated line; a last line without '\n' still counts
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_tree(section: Section, key: str, path: str) -> SoftmaxTree:
    """Darknet's ``read_tree``: ``name parent`` per line (``sscanf("%s %d")``)."""
    text = _open_relative(section, key, path, "hierarchy (tree) file")
    t = SoftmaxTree(path=path)
    last_parent = -1
    group_size = 0
    groups = 0
    for n, line in enumerate(_lines(text)):
        parts = line.split()
        name = parts[0] if parts else ""
        parent = -1
        if len(parts) > 1:
            try:
                parent = int(parts[1])
            except ValueError:
                parent = -1
        t.parent.append(parent)
        t.name.append(name)
        if parent != last_parent:
            groups += 1
            t.group_offset.append(n - group_size)
            t.group_size.append(group_size)
            group_size = 0
            last_parent = parent
        t.group.append(groups)
        group_size += 1
    t.group_offset.append(t.n - group_size)
    t.group_size.append(group_size)
    if t.n == 0:
        raise CfgError(f"[{section.type}] {key}={path}: the tree file is empty",
                       file=section.file, line=option_line(section, key), value=path)
    bad = sorted({p for p in t.parent if p >= t.n})
    if bad:
        # Darknet does not check this (it writes past its leaf array); the grouping used by the
        # softmax does not depend on it, so only warn
        warnings.warn(f"{section.file}:{option_line(section, key)}: {key}={path}: parent indices "
                      f"{bad[:5]}{'...' if len(bad) > 5 else ''} are outside the {t.n} nodes of "
                      "the tree; they are ignored for leaf/child bookkeeping", stacklevel=3)
    t.leaf = [1] * t.n
    for p in t.parent:
        if 0 <= p < t.n:
            t.leaf[p] = 0
    t.child = [-1] * t.n
    for g, (off, size) in enumerate(zip(t.group_offset, t.group_size)):
        if size and 0 <= t.parent[off] < t.n:
            t.child[t.parent[off]] = g
    return t


def read_map(section: Section, key: str, path: str) -> List[int]:
    """Darknet's ``read_map``: one integer per line (``atoi``)."""
    text = _open_relative(section, key, path, "class map file")
    out = []
    for line in _lines(text):
        tok = line.strip().split()
        try:
            out.append(int(tok[0]) if tok else 0)
        except ValueError:
            out.append(0)
    return out


def group_softmax(x: torch.Tensor, tree: SoftmaxTree, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over each sibling group of ``tree`` along the last dim (``softmax_tree``).

    The first ``tree.n`` entries of the last dimension are covered; later entries are returned
    unchanged (the caller decides what Darknet leaves there).
    """
    n = tree.n
    head = x[..., :n]
    gid = _group_index(tree, x.device)
    flat = head.reshape(-1, n) / temperature
    rows = flat.shape[0]
    ngroups = tree.groups
    idx = gid.unsqueeze(0).expand(rows, n)
    gmax = torch.full((rows, ngroups), float("-inf"), dtype=flat.dtype, device=flat.device)
    gmax = gmax.scatter_reduce(1, idx, flat, reduce="amax", include_self=True)
    e = torch.exp(flat - gmax.gather(1, idx))
    gsum = torch.zeros((rows, ngroups), dtype=flat.dtype, device=flat.device).scatter_add(1, idx, e)
    out = (e / gsum.gather(1, idx)).view(head.shape)
    if x.shape[-1] == n:
        return out
    return torch.cat([out, x[..., n:]], dim=-1)


def _group_index(tree: SoftmaxTree, device) -> torch.Tensor:
    cache = tree.__dict__.setdefault("_group_index_cache", {})
    key = str(device)
    if key not in cache:
        sizes = torch.tensor(tree.group_size, dtype=torch.long)
        gid = torch.repeat_interleave(torch.arange(len(tree.group_size)), sizes)
        cache[key] = gid.to(device)
    return cache[key]
