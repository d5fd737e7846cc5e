"""ZINC: SMILES + split CSVs (real and synthetic), benchmarking-gnns pickles, errors."""

import pickle

import pytest
import torch

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from qgnn.data import load_dataset  # noqa: E402
from qgnn.data import zinc  # noqa: E402
from qgnn.errors import DataError  # noqa: E402

RAW = ("ZINC/raw/smiles_score.csv", "ZINC/raw/indexes_train_val_test.csv")

# (SMILES, SA, logp) -- the first row is the real file's first row.
ROWS = [
    ("O=C(NC(=S)Nc1ccc(NC(=O)c2ccccc2)cc1)c1ccc(Cl)cc1", 1.699331199, 4.7191),
    ("C[NH3+]", 2.5, -1.0),
    ("c1cc[nH]c1", 2.0, 0.8),
    ("CC(=O)[O-]", 1.5, -0.5),
    ("C1CCCCCCCC1", 3.0, 3.5),  # a 9-ring: cycle penalty 3
    ("C#C[C@@H](N)Br", 4.0, 1.0),
]


def _write_csv(root, rows=ROWS, split="train,val,test\n0,3,4\n1,,5\n2,,\n", header="SMILES,SA,logp,score"):
    folder = root / "ZINC" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header]
    for smiles, sa, logp in rows:
        lines.append(f"{smiles},{sa},{logp},{logp - sa}")
    (folder / "smiles_score.csv").write_text("\n".join(lines) + "\n")
    (folder / "indexes_train_val_test.csv").write_text(split)
    return folder


def _expected_y(smiles, sa, logp):
    mol = Chem.MolFromSmiles(smiles)
    ring = max((len(r) for r in mol.GetRingInfo().AtomRings()), default=0)
    cycle = max(0, ring - 6)
    return (logp - 2.4571) / 1.4343 - (sa - 3.0526) / 0.8335 - (cycle - 0.0486) / 0.2860


def _check_bonds_follow_csr(sample, smiles, kekulize=True):
    mol = Chem.MolFromSmiles(smiles)
    if kekulize:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    src, dst = sample.graph.edges()
    assert sample.edge_attr.shape == (sample.graph.num_edges,)
    assert sample.graph.num_edges == 2 * mol.GetNumBonds()
    for s, d, a in zip(src.tolist(), dst.tolist(), sample.edge_attr.tolist()):
        bond = mol.GetBondBetweenAtoms(s, d)
        assert bond is not None
        assert zinc.BOND_CODES[str(bond.GetBondType())] == a


# ---------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real(data_root):
    from tests.conftest import need_files

    need_files(data_root, *RAW)
    return zinc.load_zinc(root=str(data_root), download=False)


def test_published_statistics(real):
    stats = real.statistics()
    assert (stats["train_graphs"], stats["val_graphs"], stats["test_graphs"]) == (10000, 1000, 1000)
    assert round(stats["avg_nodes"], 1) == 23.2
    assert real.task == "graph-reg" and real.num_node_types == 28 and real.num_edge_types == 4
    x = torch.cat([s.x for s in real.samples])
    attr = torch.cat([s.edge_attr for s in real.samples])
    assert x.min() >= 0 and x.max() < 28
    assert set(attr.unique().tolist()) == {1, 2, 3}


def test_real_target_is_the_design_formula(real, data_root):
    import csv

    with open(data_root / RAW[0]) as f:
        rows = list(csv.DictReader(f))
    for k in (0, 1, 5000, 11999):
        row = rows[k]
        expected = _expected_y(row["SMILES"], float(row["SA"]), float(row["logp"]))
        assert real[k].y.shape == (1,)
        assert real[k].y.item() == pytest.approx(expected, abs=1e-5)
        _check_bonds_follow_csr(real[k], row["SMILES"])


# ---------------------------------------------------------------------------- synthetic CSV
def test_atom_types_bonds_and_targets(tmp_path):
    _write_csv(tmp_path)
    ds = load_dataset("zinc", str(tmp_path), download=False)
    idx = zinc.ATOM_INDEX
    assert ds[1].x.tolist() == [idx["C"], idx["N H3 +"]]
    assert ds[2].x.tolist() == [idx["C"]] * 3 + [idx["N"], idx["C"]]  # [nH] has no type of its own
    assert ds[3].x.tolist() == [idx["C"], idx["C"], idx["O"], idx["O -"]]
    assert ds[5].x.tolist() == [idx["C"], idx["C"], idx["C H1"], idx["N"], idx["Br"]]
    for sample, (smiles, sa, logp) in zip(ds.samples, ROWS):
        assert sample.y.item() == pytest.approx(_expected_y(smiles, sa, logp), abs=1e-5)
        _check_bonds_follow_csr(sample, smiles)
    assert ds[4].y.item() == pytest.approx((3.5 - 2.4571) / 1.4343 - (3.0 - 3.0526) / 0.8335 - (3 - 0.0486) / 0.2860, abs=1e-5)
    assert {k: v.tolist() for k, v in ds.splits.items()} == {"train": [0, 1, 2], "val": [3], "test": [4, 5]}


def test_score_target_is_the_csv_column(tmp_path):
    _write_csv(tmp_path)
    ds = zinc.load_zinc(root=str(tmp_path), download=False, target="score")
    for sample, (_, sa, logp) in zip(ds.samples, ROWS):
        assert sample.y.item() == pytest.approx(logp - sa, abs=1e-5)


def test_aromatic_bonds_kept(tmp_path):
    _write_csv(tmp_path)
    ds = zinc.load_zinc(root=str(tmp_path), download=False, kekulize=False)
    assert ds.num_edge_types == 5
    assert set(ds[2].edge_attr.tolist()) == {4}
    _check_bonds_follow_csr(ds[0], ROWS[0][0], kekulize=False)


def test_sa_and_logp_recomputed_when_absent(tmp_path):
    pytest.importorskip("networkx")
    folder = tmp_path / "ZINC" / "raw"
    folder.mkdir(parents=True)
    (folder / "smiles_score.csv").write_text(f"SMILES\n{ROWS[0][0]}\n")
    (folder / "indexes_train_val_test.csv").write_text("train,val,test\n0,,\n")
    ds = zinc.load_zinc(root=str(tmp_path), download=False)
    assert ds[0].y.item() == pytest.approx(_expected_y(*ROWS[0]), abs=1e-5)


def test_cycle_basis_option(tmp_path):
    pytest.importorskip("networkx")
    # Naphthalene: SSSR rings are 6 and 6; a cycle basis may contain the 10-ring perimeter.
    rows = [("c1ccc2ccccc2c1", 2.0, 2.0)]
    _write_csv(tmp_path, rows, split="train,val,test\n0,,\n")
    sssr = zinc.load_zinc(root=str(tmp_path), download=False, cache=False)
    basis = zinc.load_zinc(root=str(tmp_path), download=False, cache=False, cycle="cycle_basis")
    mol = Chem.MolFromSmiles(rows[0][0])
    penalty = max(0, zinc.largest_cycle(mol, "cycle_basis") - 6)
    assert sssr[0].y.item() == pytest.approx(_expected_y(*rows[0]), abs=1e-5)
    assert basis[0].y.item() == pytest.approx(sssr[0].y.item() - penalty / 0.2860, abs=1e-5)


# ---------------------------------------------------------------------------- pickles
def _bench_dict(sample):
    n = sample.graph.num_nodes
    adj = torch.zeros(n, n, dtype=torch.long)
    src, dst = sample.graph.edges()
    adj[src, dst] = sample.edge_attr
    return {"num_atom": n, "atom_type": sample.x.clone(), "bond_type": adj,
            "logP_SA_cycle_normalized": sample.y.clone()}


def _triples(sample):
    src, dst = sample.graph.edges()
    return sorted(zip(dst.tolist(), src.tolist(), sample.edge_attr.tolist()))


def test_benchmark_pickles(tmp_path):
    _write_csv(tmp_path / "csv")
    ref = zinc.load_zinc(root=str(tmp_path / "csv"), download=False)
    folder = tmp_path / "pkl" / "ZINC" / "raw" / "molecules"
    folder.mkdir(parents=True)
    parts = {"train": [0, 1, 2], "val": [3, 4], "test": [5]}
    for split, ids in parts.items():
        with open(folder / f"{split}.pickle", "wb") as f:
            pickle.dump([_bench_dict(ref[i]) for i in ids], f)
    # Index files select the subset: train keeps molecules 2 and 0 of train.pickle.
    (folder / "train.index").write_text("2,0\n")
    (folder / "val.index").write_text("1\n")
    (folder / "test.index").write_text("0\n")
    ds = zinc.load_zinc(root=str(tmp_path / "pkl"), download=False)
    assert {k: v.tolist() for k, v in ds.splits.items()} == {"train": [0, 1], "val": [2], "test": [3]}
    for got, want in zip(ds.samples, [ref[2], ref[0], ref[4], ref[5]]):
        assert torch.equal(got.x, want.x)
        # Same CSR rows; within a row the pickle lists sources in index order.
        assert torch.equal(got.graph.indptr, want.graph.indptr)
        assert _triples(got) == _triples(want)
        assert torch.equal(got.y, want.y)
    full = zinc.load_zinc(root=str(tmp_path / "pkl"), download=False, subset=False)
    assert len(full) == 6


def test_pickle_missing_keys(tmp_path):
    folder = tmp_path / "ZINC" / "raw"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        with open(folder / f"{split}.pickle", "wb") as f:
            pickle.dump([{"atom_type": torch.zeros(1, dtype=torch.long)}], f)
    with pytest.raises(DataError, match="lacks bond_type"):
        zinc.load_zinc(root=str(tmp_path), download=False, subset=False)


# ---------------------------------------------------------------------------- errors
def test_wrong_column_count(tmp_path):
    folder = _write_csv(tmp_path)
    text = (folder / "smiles_score.csv").read_text().splitlines()
    text[3] += ",42"
    (folder / "smiles_score.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"line 4: 5 fields, but the header .* has 4 columns"):
        zinc.load_zinc(root=str(tmp_path), download=False)


def test_bad_smiles(tmp_path):
    _write_csv(tmp_path, ROWS[:2] + [("C1CC(", 2.0, 1.0)], split="train,val,test\n0,1,2\n")
    with pytest.raises(DataError, match=r"line 4: RDKit cannot parse the SMILES 'C1CC\('"):
        zinc.load_zinc(root=str(tmp_path), download=False)


def test_unknown_element(tmp_path):
    _write_csv(tmp_path, [("[Se]C", 2.0, 1.0)], split="train,val,test\n0,,\n")
    with pytest.raises(DataError, match="outside the 28 ZINC atom types"):
        zinc.load_zinc(root=str(tmp_path), download=False)


def test_bad_split_file(tmp_path):
    _write_csv(tmp_path, split="training,validation\n0,1\n")
    with pytest.raises(DataError, match="train,val,test"):
        zinc.load_zinc(root=str(tmp_path), download=False)
    _write_csv(tmp_path, split="train,val,test\n0,1,99\n")
    with pytest.raises(DataError, match="names row 99"):
        zinc.load_zinc(root=str(tmp_path), download=False)
    _write_csv(tmp_path, split="train,val,test\n0,0,1\n")
    with pytest.raises(DataError, match="more than one split"):
        zinc.load_zinc(root=str(tmp_path), download=False)


def test_missing_files_lists_both_layouts(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("zinc", str(tmp_path), download=False)
    message = str(info.value)
    for name in ("smiles_score.csv", "indexes_train_val_test.csv", "train.pickle", "test.pickle"):
        assert str(tmp_path / "ZINC" / "raw" / name) in message


def test_unknown_target(tmp_path):
    _write_csv(tmp_path)
    with pytest.raises(DataError, match="target must be"):
        zinc.load_zinc(root=str(tmp_path), download=False, target="qed")
