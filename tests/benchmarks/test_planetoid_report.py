"""The generated results page stays in step with the committed sweep summaries."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _report_module():
    spec = importlib.util.spec_from_file_location("planetoid_report", REPO / "benchmarks/planetoid_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render(module, folders) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        module.main([str(f) for f in folders])
    return buf.getvalue()


def test_docs_page_is_the_report_of_the_committed_summaries():
    module = _report_module()
    text = _render(module, [REPO / f for f in module.DEFAULT_FOLDERS])
    assert text == (REPO / "docs/planetoid_quantized.md").read_text(), (
        "docs/planetoid_quantized.md is out of date: regenerate it with "
        "python benchmarks/planetoid_report.py > docs/planetoid_quantized.md")


def test_a_later_folder_replaces_rows_label_by_label(tmp_path):
    module = _report_module()
    base = json.loads((REPO / "benchmarks/results/planetoid_h200x2/qat_planetoid_w8a8.json").read_text())
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "qat_planetoid_w8a8.json").write_text(json.dumps(base))
    row = dict(next(r for r in base if r["label"] == "cora_gcn_a2q"), test_mean=12.34, test_std=0.5)
    (second / "qat_planetoid_w8a8.json").write_text(json.dumps([row]))
    merged = module.load(module.Folders([str(first), str(second)]) / "qat_planetoid_w8a8.json")
    assert merged["cora_gcn_a2q"]["test_mean"] == 12.34
    assert merged["cora_gcn_qat"] == next(r for r in base if r["label"] == "cora_gcn_qat")
    text = _render(module, [first, second])
    assert "| cora | gcn | a2q | 82.6 | 12.3 ± 0.5 |" in text
