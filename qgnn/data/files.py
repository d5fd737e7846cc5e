"""File helpers shared by the graph-level and OGB readers.

- :func:`missing_files_error`: the one message format for "these files are missing, put
  them here" (lists every expected path under the data root).
- :func:`download`: fetch one file from its canonical source when online, checked by
  sha256 where a checksum is known; returns ``False`` (and leaves nothing behind) offline.
- :class:`ProcessedCache`: parsed datasets cached under ``<root>/<Name>/processed/`` when
  that folder is writable, else kept in memory for the process (a read-only shared data
  root must still be fast the second time).
- :func:`pack_samples` / :func:`unpack_samples`: a list of :class:`GraphSample` as a few
  flat tensors, so the cache loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from qgnn.data.base import GraphSample, sha256
from qgnn.errors import DataError
from qgnn.graph import Graph
from qgnn.signals import interrupts_held

Tensor = torch.Tensor

# Bump when a reader's parsed output changes, so stale caches are rebuilt.
CACHE_FORMAT = 1


def missing_files_error(dataset: str, expected: Sequence[Path], how: str) -> DataError:
    """A :class:`DataError` naming every expected path and how to obtain the files."""
    listing = "\n".join(f"  {p}" for p in expected)
    return DataError(
        f"{dataset} files are missing. Expected:\n{listing}\n{how} "
        "Or point --data-root / QGNN_DATA at a folder that holds them."
    )


def download(url: str, target: Path, checksum: Optional[str] = None, timeout: float = 30) -> bool:
    """Download ``url`` to ``target``; ``False`` when offline or the host is unreachable.

    The payload goes to a temporary file first and is moved into place only once its
    sha256 matches ``checksum`` (when given), so an interrupted download never leaves a
    truncated file that later looks present.
    """
    if not writable(target.parent):
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        tmp.unlink(missing_ok=True)
        return False
    if checksum is not None:
        actual = sha256(tmp)
        if actual != checksum:
            tmp.unlink(missing_ok=True)
            raise DataError(
                f"the file downloaded from {url} has sha256 {actual}, expected {checksum}; "
                "the source changed or the transfer was corrupted. Try again, or fetch it by hand."
            )
    tmp.replace(target)
    return True


def writable(folder: Path) -> bool:
    """Whether ``folder`` (or its nearest existing ancestor) may be written to.

    Checks the permission bits as well as ``os.access``: running as root, ``access``
    reports a folder without write bits (a data root shared read-only) as writable, and
    writing there anyway would modify files the user meant to keep untouched.
    """
    p = Path(folder).absolute()
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return bool(p.is_dir() and p.stat().st_mode & 0o222 and os.access(p, os.W_OK))


def file_key(paths: Iterable[Path]) -> list:
    """Identity of raw files for cache invalidation: name, size and mtime of each."""
    key = []
    for p in paths:
        st = p.stat()
        key.append((p.name, st.st_size, st.st_mtime_ns))
    return key


class ProcessedCache:
    """Parsed-dataset cache: ``<folder>/<name>.pt`` when writable, else process memory.

    ``get(key, build)`` returns the cached payload (a dict of tensors and plain values) whose
    stored key equals ``key``, else calls ``build()`` and stores its result.
    """

    _memory: dict = {}

    def __init__(self, folder: Path, name: str, enabled: bool = True):
        self.path = folder / f"{name}.pt"
        self.enabled = enabled

    def get(self, key, build: Callable[[], dict]) -> dict:
        if not self.enabled:
            return build()
        full_key = repr((CACHE_FORMAT, key))
        memo = self._memory.get(str(self.path))
        if memo is not None and memo[0] == full_key:
            return memo[1]
        if self.path.exists():
            try:
                stored = torch.load(self.path, weights_only=True)
                if stored.get("key") == full_key:
                    self._memory[str(self.path)] = (full_key, stored["payload"])
                    return stored["payload"]
            except Exception:  # a corrupt or foreign cache file is simply rebuilt
                pass
        payload = build()
        self._memory[str(self.path)] = (full_key, payload)
        self._write({"key": full_key, "payload": payload})
        return payload

    def _write(self, obj: dict) -> None:
        if not writable(self.path.parent):
            return  # read-only data root (e.g. a shared mount): the memory copy is enough
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        except OSError:
            return
        os.close(fd)
        try:
            with interrupts_held():  # a cut torch.save surfaces as a RuntimeError, not an interrupt
                torch.save(obj, tmp)
                os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


def pack_samples(samples: Sequence[GraphSample]) -> dict:
    """Flatten samples into concatenated tensors (CSR order kept) plus per-graph sizes."""
    payload = {
        "num_nodes": torch.tensor([s.graph.num_nodes for s in samples], dtype=torch.long),
        "num_edges": torch.tensor([s.graph.num_edges for s in samples], dtype=torch.long),
        "indices": torch.cat([s.graph.indices for s in samples]) if samples else torch.zeros(0, dtype=torch.long),
        "in_degrees": torch.cat([s.graph.in_degrees() for s in samples]) if samples else torch.zeros(0, dtype=torch.long),
        "x": torch.cat([s.x for s in samples]) if samples else torch.zeros(0),
        "y": torch.stack([s.y for s in samples]) if samples else torch.zeros(0),
    }
    if samples and samples[0].edge_attr is not None:
        payload["edge_attr"] = torch.cat([s.edge_attr for s in samples])
    return payload


def unpack_samples(payload: dict) -> list:
    """Inverse of :func:`pack_samples`."""
    nodes = payload["num_nodes"].tolist()
    edges = payload["num_edges"].tolist()
    indices = torch.split(payload["indices"], edges)
    degrees = torch.split(payload["in_degrees"], nodes)
    xs = torch.split(payload["x"], nodes)
    attrs = torch.split(payload["edge_attr"], edges) if "edge_attr" in payload else [None] * len(nodes)
    samples = []
    for n, idx, deg, x, y, attr in zip(nodes, indices, degrees, xs, payload["y"], attrs):
        indptr = torch.zeros(n + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(deg, 0)
        # Stored graphs were built by Graph.from_edges, so the CSR is already valid.
        samples.append(GraphSample(Graph(indptr, idx, n), x, y, attr))
    return samples


def sorted_by_destination(src: Tensor, dst: Tensor, *per_edge: Optional[Tensor]):
    """Edges (and per-edge tensors) in the stable destination order ``Graph`` uses.

    ``Graph.from_edges`` sorts edges by destination; per-edge labels built alongside the
    edge list must follow the same permutation, so readers sort first and hand over edges
    that are already in CSR order.
    """
    _, perm = torch.sort(dst, stable=True)
    out = [src[perm], dst[perm]]
    out.extend(None if t is None else t[perm] for t in per_edge)
    return out
