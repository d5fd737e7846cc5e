"""End to end: train.py writes metrics and checkpoints, eval.py reproduces the test metric,
a fixed seed repeats, resume continues, and user mistakes exit non-zero without a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qgnn.engine import evaluate_checkpoint, fit, load_checkpoint, load_config, save_checkpoint
from qgnn.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
CORA = [f"Cora/raw/ind.cora.{p}" for p in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")]


def short(arch="gcn", epochs=6, **extra):
    overrides = [f"model.arch={arch}", f"train.epochs={epochs}", "train.checkpoint_every=2"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


@pytest.mark.parametrize("arch", ["gcn", "gin", "gat"])
def test_fit_then_eval_reproduces_test_metric(require_files, tmp_path, arch):
    root = str(require_files(*CORA))
    metrics = fit(short(arch), tmp_path, data_root=root, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    for key in ("best_epoch", "val_metric", "test_metric", "seconds_per_epoch", "seed"):
        assert saved[key] is not None
    again = evaluate_checkpoint(tmp_path / "best.pt", data_root=root)
    assert again["test_metric"] == metrics["test_metric"]
    assert again["val_metric"] == metrics["val_metric"]
    assert again["epoch"] == metrics["best_epoch"]


def test_fixed_seed_repeats_and_seeds_differ(require_files, tmp_path):
    root = str(require_files(*CORA))
    a = fit(short(), tmp_path / "a", data_root=root, progress=False)
    b = fit(short(), tmp_path / "b", data_root=root, progress=False)
    c = fit(short(**{"train.seed": 1}), tmp_path / "c", data_root=root, progress=False)
    sa = load_checkpoint(tmp_path / "a/last.pt")["model"]
    sb = load_checkpoint(tmp_path / "b/last.pt")["model"]
    sc = load_checkpoint(tmp_path / "c/last.pt")["model"]
    assert a["test_metric"] == b["test_metric"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues_to_the_same_result(require_files, tmp_path):
    root = str(require_files(*CORA))
    full = fit(short(epochs=6), tmp_path / "full", data_root=root, progress=False)
    fit(short(epochs=4), tmp_path / "part", data_root=root, progress=False)
    # Resume needs the same config: rewrite the stored epoch budget as a longer run would.
    ckpt = load_checkpoint(tmp_path / "part/last.pt")
    ckpt["config"]["train"]["epochs"] = 6
    save_checkpoint(tmp_path / "part/last.pt", **{k: ckpt[k] for k in ("config", "epoch", "model", "optimizer", "metrics", "extra")})
    resumed = fit(short(epochs=6), tmp_path / "part", data_root=root, resume=True, progress=False)
    assert resumed["epochs_run"] == 6
    assert resumed["test_metric"] == full["test_metric"]
    assert resumed["best_epoch"] == full["best_epoch"]


def test_resume_with_other_config_is_refused(require_files, tmp_path):
    root = str(require_files(*CORA))
    fit(short(epochs=2), tmp_path, data_root=root, progress=False)
    with pytest.raises(CheckpointError, match=r"another config \(model.hidden: 64 -> 32"):
        fit(short(epochs=3, **{"model.hidden": 32}), tmp_path, data_root=root, resume=True, progress=False)


def test_resume_from_a_checkpoint_without_a_newer_key(require_files, tmp_path):
    # A key added to the schema later (here prompt.node_lr) takes its default on resume.
    root = str(require_files(*CORA))
    fit(short(epochs=2), tmp_path, data_root=root, progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    del ckpt["config"]["prompt"]["node_lr"]
    ckpt["config"]["train"]["epochs"] = 3
    save_checkpoint(tmp_path / "last.pt", **{k: ckpt[k] for k in ("config", "epoch", "model", "optimizer", "metrics", "extra")})
    resumed = fit(short(epochs=3), tmp_path, data_root=root, resume=True, progress=False)
    assert resumed["epochs_run"] == 3


def test_corrupt_and_truncated_checkpoints(require_files, tmp_path):
    root = str(require_files(*CORA))
    fit(short(epochs=2), tmp_path, data_root=root, progress=False)
    good = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not a qgnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def run_cli(script, *args, env_root=None):
    env = {"PATH": "/usr/bin:/bin", "DGLBACKEND": "pytorch"}
    if env_root:
        env["QGNN_DATA"] = env_root
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_cli_train_and_eval(require_files, tmp_path):
    root = str(require_files(*CORA))
    out = tmp_path / "run"
    result = run_cli("train.py", "--config", "configs/cora_gcn_fp32.yaml", "--set", "train.epochs=3",
                     "--out", str(out), "--quiet", "--data-root", root)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    result = run_cli("eval.py", "--checkpoint", str(out / "best.pt"), "--data-root", root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_metric"] == metrics["test_metric"]


def test_sigterm_saves_last_checkpoint_and_exits_130(require_files, tmp_path):
    # Batch schedulers and `timeout` stop jobs with SIGTERM: it must take the Ctrl-C path.
    import signal
    import time

    root = str(require_files(*CORA))
    out = tmp_path / "run"
    env = {"PATH": "/usr/bin:/bin", "DGLBACKEND": "pytorch"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--set", "train.epochs=100000",
         "--set", "train.checkpoint_every=1", "--out", str(out), "--quiet", "--data-root", root],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "rerun with --resume" in stderr
    assert json.loads((out / "metrics.json").read_text())["interrupted"] is True


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "model.hiden=3"], "unknown config key 'model.hiden'"),
        (["--config", "configs/nope.yaml"], "does not exist"),
        (["--set", "data.name=nosuch"], "Unknown dataset 'nosuch'"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, args, message):
    result = run_cli("train.py", *args, "--out", str(tmp_path), "--quiet")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_eval_corrupt_checkpoint(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    result = run_cli("eval.py", "--checkpoint", str(tmp_path / "bad.pt"))
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("poison", ["parameter", "input"])
def test_non_finite_loss_names_the_culprit_before_any_update(poison):
    """A NaN loss stops the epoch with the first non-finite tensor named, and the optimizer
    step is not taken (the parameters stay those that gave the loss)."""
    from qgnn.data import NodeDataset
    from qgnn.engine.tasks import NodeClassificationTask
    from qgnn.errors import TrainingError
    from qgnn.graph import Graph
    from qgnn.nn import NodeClassifier

    graph = Graph.from_edges([0, 1, 2, 3], [1, 2, 3, 0])
    x = torch.rand(4, 5)
    if poison == "input":
        x[2, 1] = float("nan")
    splits = {k: torch.tensor([0, 1, 2, 3]) for k in ("train", "val", "test")}
    task = NodeClassificationTask(NodeDataset("toy", graph, x, torch.tensor([0, 1, 0, 1]), splits, 2),
                                  torch.device("cpu"))
    model = NodeClassifier("gcn", 5, 8, 2, dropout=0.0)
    if poison == "parameter":
        with torch.no_grad():
            model.convs[1].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    culprit = "parameter 'convs.1.weight'" if poison == "parameter" else "the model output"
    with pytest.raises(TrainingError, match=f"loss is nan; first non-finite tensor: {culprit}"):
        task.train_epoch(model, optimizer, lambda m: torch.zeros(()))
    after = model.state_dict()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)


def test_adam_steps_fused_only_when_every_parameter_is_a_cuda_float():
    from types import SimpleNamespace

    from qgnn.engine.config import load_config
    from qgnn.engine.trainer import fused_adam_applies, make_optimizer
    from qgnn.nn import NodeClassifier

    cuda = SimpleNamespace(is_cuda=True, dtype=torch.float32)
    cpu = SimpleNamespace(is_cuda=False, dtype=torch.float32)
    cuda_int = SimpleNamespace(is_cuda=True, dtype=torch.int64)
    assert fused_adam_applies([{"params": [cuda]}, {"params": [cuda]}])
    assert not fused_adam_applies([{"params": [cuda]}, {"params": [cpu]}])
    assert not fused_adam_applies([{"params": [cuda_int]}])
    assert not fused_adam_applies([{"params": []}])
    optimizer = make_optimizer(load_config(None, []), NodeClassifier("gcn", 6, 8, 3))
    assert not optimizer.defaults["fused"]  # CPU parameters: torch's default (foreach) step
