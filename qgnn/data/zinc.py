"""ZINC 12k (the benchmarking-gnns subset): molecular graphs, regression of penalised logP.

Two raw layouts, under ``<root>/ZINC/raw/``:

1. **SMILES + split** (Graphium's ``ZINC_bench_gnn``): ``smiles_score.csv`` with columns
   ``SMILES,SA,logp,score`` (``score = logp - SA``, checked to 4e-8 on the 12k rows; SA and
   logP agree with RDKit's ``sascorer`` and ``Crippen.MolLogP``), and
   ``indexes_train_val_test.csv`` with columns ``train,val,test`` holding 0-based row
   indices into the SMILES file (10000 / 1000 / 1000; shorter columns padded with blanks).
   Graphs are built with RDKit.
2. **benchmarking-gnns / PyG pickles**: ``train.pickle``, ``val.pickle``, ``test.pickle`` (lists
   of dicts with ``atom_type`` ``(n,)`` long, ``bond_type`` ``(n, n)`` long adjacency of bond
   types, ``logP_SA_cycle_normalized`` ``(1,)`` float) and, for the 12k subset,
   ``train.index`` etc. (one comma-separated line of indices into the pickle). Loose in
   ``raw/`` or in ``raw/molecules/`` (the folder of ``molecules.zip``). These pickles are
   loaded with :mod:`pickle`: only open files from a source you trust.

Node label (``x``, ``(n,)`` int64): the benchmarking-gnns ZINC atom dictionary
(:data:`ATOM_TYPES`, 28 types). An atom's key is its element symbol, then ``" H<k>"`` when the
SMILES gives it ``k`` explicit hydrogens (bracket atoms such as ``[C@@H]``, ``[NH3+]``), then
``" +"`` / ``" -"`` for a formal charge. Keys outside the dictionary drop the hydrogen part,
then the charge: the only one in ZINC 12k is ``"N H1"`` (aromatic ``[nH]``, 899 atoms), which
becomes ``"N"`` because the benchmark dictionary has no such type. An element outside the
dictionary is a :class:`DataError`.

Edge label (``edge_attr``, ``(e,)`` int64, CSR order): with ``kekulize=True`` (default, as the
benchmark) SINGLE=1, DOUBLE=2, TRIPLE=3 (0 is the benchmark's unused "NONE"), so
``num_edge_types=4``; with ``kekulize=False`` aromatic bonds stay AROMATIC=4 and
``num_edge_types=5``. Each bond is stored in both directions.

Target (``y``, ``(1,)`` float32), ``target=``:

- ``"penalized_logp"`` (default): DESIGN §6's normalised penalised logP
  ``(logP - 2.4571)/1.4343 - (SA - 3.0526)/0.8335 - (cycle - 0.0486)/0.2860`` with logP and SA
  taken from the CSV (exact; no recomputation) and ``cycle = max(0, largest ring - 6)``.
  ``cycle="sssr"`` (default) takes the largest ring of RDKit's smallest set of smallest rings;
  ``cycle="cycle_basis"`` the largest cycle of ``networkx.cycle_basis`` on the heavy-atom
  graph, as the JT-VAE reference code does (the two differ on 60 of the 12k molecules,
  fused ring systems where a fundamental cycle runs round the outside). Which of the two
  produced the benchmark's ``logP_SA_cycle_normalized`` could not be checked here, so values
  may differ from the pickles' on those molecules.
- ``"score"``: the CSV's own ``score`` column (``logP - SA``, unnormalised, no cycle term).

When the CSV lacks the ``SA``/``logp`` columns, they are computed with RDKit
(``Crippen.MolLogP`` and the contrib ``sascorer``), which reproduce the shipped values.
The pickle layout always yields its stored ``logP_SA_cycle_normalized``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from qgnn.data.base import GraphDataset, GraphSample, resolve_data_root
from qgnn.data.files import (
    ProcessedCache,
    download,
    file_key,
    missing_files_error,
    pack_samples,
    sorted_by_destination,
    unpack_samples,
)
from qgnn.data.registry import register
from qgnn.errors import DataError
from qgnn.graph import Graph

NAME = "ZINC"

# benchmarking-gnns ZINC atom dictionary (data/molecules/atom_dict.pickle), index = label.
ATOM_TYPES = (
    "C", "O", "N", "F", "C H1", "S", "Cl", "O -", "N H1 +", "Br", "N H3 +", "N H2 +", "N +",
    "N -", "S -", "I", "P", "O H1 +", "N H1 -", "O +", "S +", "P H1", "P H2", "C H2 -", "P +",
    "S H1 +", "C H1 -", "P H1 +",
)  # fmt: skip
ATOM_INDEX = {key: i for i, key in enumerate(ATOM_TYPES)}
BOND_CODES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}

# Normalisation constants of the 250k ZINC set (DESIGN §6).
LOGP_MEAN, LOGP_STD = 2.4571, 1.4343
SA_MEAN, SA_STD = 3.0526, 0.8335
CYCLE_MEAN, CYCLE_STD = 0.0486, 0.2860

CSV_FILES = ("smiles_score.csv", "indexes_train_val_test.csv")
PICKLE_FILES = ("train.pickle", "val.pickle", "test.pickle")
SPLITS = ("train", "val", "test")
# Graphium's copy of the SMILES + split (datamol-io/graphium, commit 2573628).
CSV_URL = (
    "https://raw.githubusercontent.com/datamol-io/graphium/"
    "2573628b14751178679cd4606a1523486585d873/ZINC_bench_gnn/{file}"
)
CSV_SHA256 = {
    "smiles_score.csv": "f83841cea054f4a83db6ac3c6320ce0ccca3409a861f26b9b5c42e16c9e50518",
    "indexes_train_val_test.csv": "0fe4cc95b12ddbb373f6886e1dafec14bfb22ea774f5cd0c0559d59a18cbb5d8",
}


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:
        raise DataError(
            "Reading ZINC from SMILES needs RDKit: pip install rdkit (tested with 2026.9.1)."
        ) from exc
    return Chem, RDLogger


@contextlib.contextmanager
def _quiet_rdkit():
    """Silence RDKit's parse warnings: a bad SMILES becomes one DataError instead."""
    _, RDLogger = _rdkit()
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


# ---------------------------------------------------------------------------- molecules
def atom_type(atom) -> int:
    """Benchmark atom label of an RDKit atom (see the module docstring for the fallbacks)."""
    symbol = atom.GetSymbol()
    hs = atom.GetNumExplicitHs()
    charge = atom.GetFormalCharge()
    sign = " +" if charge > 0 else " -" if charge < 0 else ""
    for key in (f"{symbol} H{hs}{sign}" if hs else f"{symbol}{sign}", f"{symbol}{sign}", symbol):
        if key in ATOM_INDEX:
            return ATOM_INDEX[key]
    raise DataError(
        f"atom {symbol} (charge {charge}, {hs} explicit H) is outside the 28 ZINC atom types "
        f"({', '.join(ATOM_TYPES)}); this molecule does not belong to ZINC."
    )


def largest_cycle(mol, method: str = "sssr") -> int:
    """Size of the largest ring (0 if acyclic); ``method`` ``"sssr"`` or ``"cycle_basis"``."""
    if method == "sssr":
        rings = mol.GetRingInfo().AtomRings()
        return max((len(r) for r in rings), default=0)
    if method == "cycle_basis":
        import networkx as nx
        from rdkit.Chem import rdmolops

        cycles = nx.cycle_basis(nx.Graph(rdmolops.GetAdjacencyMatrix(mol)))
        return max((len(c) for c in cycles), default=0)
    raise DataError(f"cycle must be 'sssr' or 'cycle_basis', got {method!r}.")


def penalized_logp(logp: float, sa: float, largest_ring: int) -> float:
    """DESIGN §6's normalised penalised logP."""
    cycle = max(0, largest_ring - 6)
    return (
        (logp - LOGP_MEAN) / LOGP_STD
        - (sa - SA_MEAN) / SA_STD
        - (cycle - CYCLE_MEAN) / CYCLE_STD
    )


def mol_to_sample(mol, y: float, kekulize: bool = True) -> GraphSample:
    """An RDKit molecule as a :class:`GraphSample` (``x`` atom types, ``edge_attr`` bonds)."""
    Chem, _ = _rdkit()
    x = torch.tensor([atom_type(a) for a in mol.GetAtoms()], dtype=torch.long)
    if kekulize:
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    src, dst, attr = [], [], []
    for bond in mol.GetBonds():
        code = BOND_CODES.get(str(bond.GetBondType()))
        if code is None:
            raise DataError(f"bond type {bond.GetBondType()} is not one of {', '.join(BOND_CODES)}.")
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        src += [i, j]
        dst += [j, i]
        attr += [code, code]
    s, d, a = sorted_by_destination(
        torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long),
        torch.tensor(attr, dtype=torch.long),
    )
    graph = Graph.from_edges(s, d, len(x))
    return GraphSample(graph, x, torch.tensor([y], dtype=torch.float32), a)


# ---------------------------------------------------------------------------- CSV layout
def _read_csv_rows(path: Path) -> tuple[list, list]:
    """``(header, rows)``; a row whose field count differs from the header is an error."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}).") from exc
    if not header:
        raise DataError(f"{path} is empty; expected a header line.")
    for k, row in enumerate(rows):
        if row and len(row) != len(header):
            raise DataError(
                f"{path}, line {k + 2}: {len(row)} fields, but the header "
                f"({','.join(header)}) has {len(header)} columns. The file is corrupt or truncated."
            )
    return header, [r for r in rows if r]


def _sa_and_logp(mol):
    from rdkit.Chem import Crippen, RDConfig

    contrib = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if contrib not in sys.path:
        sys.path.append(contrib)
    try:
        import sascorer  # RDKit contrib module, shipped in the rdkit wheel
    except ImportError as exc:
        raise DataError(
            "The ZINC CSV has no SA column and RDKit's contrib sascorer is not installed."
        ) from exc
    return sascorer.calculateScore(mol), Crippen.MolLogP(mol)


def read_split_file(path: Path, num_rows: int) -> dict:
    """``indexes_train_val_test.csv`` -> ``{"train", "val", "test"}`` int64 row indices."""
    header, rows = _read_csv_rows(path)
    if [h.strip().lower() for h in header] != list(SPLITS):
        raise DataError(f"{path} must have the columns train,val,test; found {','.join(header)}.")
    splits = {}
    for c, name in enumerate(SPLITS):
        try:
            values = [int(float(r[c])) for r in rows if r[c].strip()]
        except ValueError as exc:
            raise DataError(f"{path}: column {name} holds a non-integer ({exc}).") from exc
        idx = torch.tensor(values, dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= num_rows):
            raise DataError(
                f"{path}: column {name} names row {int(idx.max())}, but the SMILES file has {num_rows} rows."
            )
        splits[name] = idx
    seen = torch.cat(list(splits.values()))
    if seen.unique().numel() != seen.numel():
        raise DataError(f"{path}: a molecule appears in more than one split (or twice in one).")
    return splits


def read_csv_layout(folder: Path, target: str, cycle: str, kekulize: bool):
    smiles_path, split_path = (folder / f for f in CSV_FILES)
    header, rows = _read_csv_rows(smiles_path)
    cols = {h.strip().lower(): i for i, h in enumerate(header)}
    if "smiles" not in cols:
        raise DataError(f"{smiles_path} has no SMILES column (header: {','.join(header)}).")
    if target == "score" and "score" not in cols:
        raise DataError(f"target='score' needs a score column in {smiles_path}.")
    Chem, _ = _rdkit()
    samples = []
    with _quiet_rdkit():
        for k, row in enumerate(rows):
            smiles = row[cols["smiles"]].strip()
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or mol.GetNumAtoms() == 0:
                raise DataError(
                    f"{smiles_path}, line {k + 2}: RDKit cannot parse the SMILES {smiles!r}. "
                    "Fix or remove that row (and its index in the split file)."
                )
            try:
                if target == "score":
                    y = float(row[cols["score"]])
                elif target == "penalized_logp":
                    if "sa" in cols and "logp" in cols:
                        sa, logp = float(row[cols["sa"]]), float(row[cols["logp"]])
                    else:
                        sa, logp = _sa_and_logp(mol)
                    y = penalized_logp(logp, sa, largest_cycle(mol, cycle))
                else:
                    raise DataError(f"target must be 'penalized_logp' or 'score', got {target!r}.")
            except ValueError as exc:
                raise DataError(f"{smiles_path}, line {k + 2}: a number is malformed ({exc}).") from exc
            if not np.isfinite(y):
                raise DataError(f"{smiles_path}, line {k + 2}: the target is not finite.")
            samples.append(mol_to_sample(mol, y, kekulize))
    return samples, read_split_file(split_path, len(rows))


# ---------------------------------------------------------------------------- pickle layout
def _read_index(path: Path) -> list:
    try:
        text = path.read_text().strip()
        return [int(t) for t in text.replace("\n", ",").split(",") if t.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} must be one comma-separated line of integers ({exc}).") from exc


def pickle_to_sample(mol: dict, source: str) -> GraphSample:
    """One benchmarking-gnns molecule dict as a :class:`GraphSample`."""
    missing = [k for k in ("atom_type", "bond_type", "logP_SA_cycle_normalized") if k not in mol]
    if missing:
        raise DataError(f"{source}: a molecule lacks {', '.join(missing)}; not a benchmarking-gnns ZINC pickle.")
    x = torch.as_tensor(mol["atom_type"]).long().view(-1)
    adj = torch.as_tensor(mol["bond_type"]).long()
    if adj.shape != (x.numel(), x.numel()):
        raise DataError(f"{source}: bond_type is {tuple(adj.shape)} for {x.numel()} atoms.")
    # nonzero() lists row-major (src, dst); sort by destination to match Graph's CSR order.
    src, dst = adj.nonzero(as_tuple=True)
    s, d, a = sorted_by_destination(src, dst, adj[src, dst])
    y = torch.as_tensor(mol["logP_SA_cycle_normalized"], dtype=torch.float32).view(-1)
    return GraphSample(Graph.from_edges(s, d, x.numel()), x, y, a)


def read_pickle_layout(folder: Path, subset: bool):
    samples, splits, start = [], {}, 0
    for split in SPLITS:
        path = folder / f"{split}.pickle"
        try:
            with open(path, "rb") as f:
                mols = pickle.load(f)
        except Exception as exc:
            raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}).") from exc
        if subset:
            index_path = folder / f"{split}.index"
            if not index_path.exists():
                raise missing_files_error(
                    NAME, [index_path], "The 12k subset needs the benchmarking-gnns index files "
                    "(data/molecules/<split>.index); pass subset=False for the full set."
                )
            indices = _read_index(index_path)
            if indices and max(indices) >= len(mols):
                raise DataError(f"{index_path} names molecule {max(indices)} of {len(mols)}.")
        else:
            indices = range(len(mols))
        part = [pickle_to_sample(mols[i], str(path)) for i in indices]
        samples += part
        splits[split] = torch.arange(start, start + len(part))
        start += len(part)
    return samples, splits


# ---------------------------------------------------------------------------- reader
def _locate(root: Optional[str], download_missing: bool) -> tuple[str, Path]:
    folder = resolve_data_root(root) / NAME / "raw"
    if all((folder / f).exists() for f in CSV_FILES):
        return "csv", folder
    for base in (folder, folder / "molecules"):
        if all((base / f).exists() for f in PICKLE_FILES):
            return "pickle", base
    if download_missing:
        for f in CSV_FILES:
            if not (folder / f).exists():
                download(CSV_URL.format(file=f), folder / f, CSV_SHA256[f])
        if all((folder / f).exists() for f in CSV_FILES):
            return "csv", folder
    raise missing_files_error(
        NAME,
        [folder / f for f in CSV_FILES] + [folder / f for f in PICKLE_FILES],
        "Put either the SMILES CSV and its split file (from datamol-io/graphium, "
        "ZINC_bench_gnn/) or the benchmarking-gnns pickles with their .index files there.",
    )


@register("zinc")
def load_zinc(
    name: str = "zinc",
    root: Optional[str] = None,
    target: str = "penalized_logp",
    cycle: str = "sssr",
    kekulize: bool = True,
    subset: bool = True,
    download: bool = True,
    cache: bool = True,
) -> GraphDataset:
    """Read ZINC as a :class:`GraphDataset` (task ``graph-reg``; MAE is the metric).

    Args:
        root: data root (default ``$QGNN_DATA`` or ``data/``).
        target: ``"penalized_logp"`` or ``"score"`` (CSV layout only; see the module docstring).
        cycle: ``"sssr"`` or ``"cycle_basis"``: how the ring penalty finds the largest ring.
        kekulize: bond labels 1..3 (benchmark) or keep aromatic bonds as 4.
        subset: pickle layout only: the 12k subset via ``<split>.index`` (else all molecules).
        download: fetch Graphium's CSVs (sha256-checked) when nothing is present.
        cache: keep parsed graphs under ``ZINC/processed/`` (memory if read-only).

    Returns samples with ``x`` ``(n,)`` atom types, ``edge_attr`` ``(e,)`` bond types,
    ``y`` ``(1,)``; ``splits`` train/val/test (10000/1000/1000 for the 12k subset).
    """
    kind, folder = _locate(root, download)
    if kind == "csv":
        files = [folder / f for f in CSV_FILES]
        key = (kind, target, cycle, kekulize, file_key(files))
    else:
        files = [folder / f for f in PICKLE_FILES]
        if subset:
            files += [folder / f"{s}.index" for s in SPLITS if (folder / f"{s}.index").exists()]
        key = (kind, subset, file_key(files))

    def build() -> dict:
        if kind == "csv":
            samples, splits = read_csv_layout(folder, target, cycle, kekulize)
        else:
            samples, splits = read_pickle_layout(folder, subset)
        payload = pack_samples(samples)
        payload.update({f"split_{k}": v for k, v in splits.items()})
        return payload

    cache_name = f"zinc_{kind}_{target}_{cycle}_{'kek' if kekulize else 'arom'}_{'sub' if subset else 'full'}"
    payload = ProcessedCache(resolve_data_root(root) / NAME / "processed", cache_name, cache).get(key, build)
    samples = unpack_samples(payload)
    splits = {k[len("split_"):]: v for k, v in payload.items() if k.startswith("split_")}
    num_edge_types = 4 if (kind == "pickle" or kekulize) else 5
    return GraphDataset(
        "ZINC", samples, "graph-reg", num_node_types=len(ATOM_TYPES),
        num_edge_types=num_edge_types, splits=splits,
    )
