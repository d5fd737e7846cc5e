"""Interrupts wait for a file write to finish (qgnn.signals, checkpoint saving)."""

import signal

import pytest
import torch

from qgnn.engine import checkpoint
from qgnn.signals import interrupts_held


def _raise_interrupt(signum, frame):  # what train.py installs for SIGTERM
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def sigterm_interrupts():
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def sigterm_inside_torch_save(sigterm_interrupts, monkeypatch):
    """torch.save receives a SIGTERM as it starts writing; yields the real torch.save."""
    real_save = torch.save

    def save_with_sigterm(obj, f, *args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_sigterm)
    yield real_save


def test_a_held_signal_is_delivered_after_the_block(sigterm_interrupts):
    steps = []
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        with interrupts_held():
            signal.raise_signal(signal.SIGTERM)
            steps.append("after the signal")  # the block ran to its end
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt  # handler restored


def test_no_signal_no_interrupt(sigterm_interrupts):
    with interrupts_held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_during_torch_save_leaves_a_whole_checkpoint(sigterm_inside_torch_save, tmp_path):
    # Before, the interrupt raised inside torch.save came out as its zip writer's RuntimeError.
    path = tmp_path / "best.pt"
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(path, config={"a": 1}, epoch=3, model={"w": torch.ones(2)})
    payload = checkpoint.load_checkpoint(path)
    assert payload["epoch"] == 3 and torch.equal(payload["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary left


def test_sigterm_during_a_dataset_cache_write_leaves_a_whole_cache(sigterm_inside_torch_save, tmp_path,
                                                                    monkeypatch):
    from qgnn.data import files

    cache = files.ProcessedCache(tmp_path, "toy")
    with pytest.raises(KeyboardInterrupt):
        cache.get("k", lambda: {"x": torch.arange(3)})
    monkeypatch.setattr(torch, "save", sigterm_inside_torch_save)
    monkeypatch.setattr(files.ProcessedCache, "_memory", {})  # read it back from disk, not memory
    payload = files.ProcessedCache(tmp_path, "toy").get("k", lambda: pytest.fail("rebuilt: the file was cut"))
    assert torch.equal(payload["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.pt"]
