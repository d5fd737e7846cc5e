"""Layers on the Triton path (interpreted on CPU): the CSR aggregation kernel, gathering the
feature quantizer's packed codes where it has a grid, gives the torch path's outputs and
gradients."""

import pytest
import torch

from qgnn.graph import Graph, ops
from qgnn.kernels import aggregate as agg_module
from qgnn.nn import NodeClassifier
from qgnn.quant import QuantConfig, build_quantization
from qgnn.quant.quantizers import FakeQuantize, LSQQuantizer, MaskedQuantizer, MixedQuantizer
from qgnn.quant.context import QuantContext


def small_graph(n=30, e=110, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    return Graph.from_edges(torch.cat([src, dst]), torch.cat([dst, src]), n)


def quantized_pair(arch, method, bits, graph, x, agg_kernel_b="triton"):
    """Two identical quantized models, ``torch`` and ``agg_kernel_b`` aggregation."""
    models = []
    for kernel in ("torch", agg_kernel_b):
        torch.manual_seed(0)
        model = NodeClassifier(arch, x.shape[1], 16, 4, num_layers=2, heads=2, agg_kernel=kernel)
        cfg = QuantConfig(method=method, weight_bits=bits, act_bits=bits)
        build_quantization(cfg).attach(model, example=(graph, x))
        models.append(model)
    return models


def spy_packed(monkeypatch):
    """Record the storage bits of every packed tensor the aggregation gathers."""
    seen = []
    real = agg_module.pack_rows

    def spy(x, grid):
        rows = real(x, grid)
        seen.append(rows.bits)
        return rows

    monkeypatch.setattr(agg_module, "pack_rows", spy)
    return seen


@pytest.mark.parametrize("arch", ["gcn", "gin", "gat"])
@pytest.mark.parametrize("method,bits", [("qat", 8), ("qat", 4), ("dq", 4), ("a2q", 4), ("qat", 2)])
def test_triton_low_bit_path_matches_torch(force_triton, monkeypatch, arch, method, bits):
    # Fixed features: the two paths sum in different orders, so a value within float rounding
    # of a quantization boundary takes the neighbouring code on one of them (a one-step jump
    # that spreads through the next layer); fresh draws hit one in about 1 test of 20.
    graph, x = small_graph(), torch.rand(30, 12, generator=torch.Generator().manual_seed(0))
    seen = spy_packed(monkeypatch)
    ref_model, model = quantized_pair(arch, method, bits, graph, x)
    for training in (True, False):
        ref_model.train(training)
        model.train(training)
        torch.manual_seed(1)  # same dropout / DQ masks in both
        ref = ref_model(graph, x)
        torch.manual_seed(1)
        out = model(graph, x)
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        if training:
            g_ref = torch.autograd.grad(ref.square().sum(), list(ref_model.parameters()), allow_unused=True)
            g_out = torch.autograd.grad(out.square().sum(), list(model.parameters()), allow_unused=True)
            for a, b in zip(g_out, g_ref):
                assert (a is None) == (b is None)
                if a is not None:
                    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    # GCN gathers its feature quantizer's output (DQ: only at evaluation, when nothing is
    # masked; A2Q's per-channel steps: always); GIN its input quantizer's at evaluation.
    if arch == "gcn" or (arch == "gin" and method in ("qat", "dq")):
        assert seen and set(seen) == {bits}
    if arch == "gat" or (arch == "gin" and method == "a2q"):
        # GAT's (E, heads) attention weights keep the torch path; A2Q's node-wise input
        # quantizer has per-node bit widths (no single grid)
        assert not seen


def test_low_bit_gather_off_and_torch_kernel_gather_floats(force_triton, monkeypatch):
    graph, x = small_graph(), torch.rand(30, 12)
    seen = spy_packed(monkeypatch)
    torch.manual_seed(0)
    model = NodeClassifier("gcn", 12, 16, 4, low_bit_gather=False)
    build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4)).attach(model, example=(graph, x))
    model.eval()(graph, x)
    assert not seen
    assert ops.uses_triton_kernel(graph, x) and not ops.uses_triton_kernel(graph, x, kernel="torch")
    assert not ops.uses_triton_kernel(graph, x, torch.ones(graph.num_edges, requires_grad=True))
    assert not ops.uses_triton_kernel(graph, x, reduce="max")
    with pytest.raises(ValueError, match="agg_kernel must be one of"):
        NodeClassifier("gcn", 12, 16, 4, agg_kernel="cusparse")


def test_code_grids_of_the_quantizers():
    y = torch.randn(6, 5)
    fq = FakeQuantize(bits=4)
    assert fq.code_grid(y) is None  # no range observed yet: it passes x through
    out = fq(y)
    grid = fq.code_grid(out)
    codes = torch.round(out / grid.scale) + grid.zero_point
    assert grid.storage_bits == 4 and codes.min() >= 0 and codes.max() <= 15
    assert torch.allclose((codes - grid.zero_point) * grid.scale, out)

    lsq = LSQQuantizer(bits=2, granularity="per_column")
    out = lsq(y)
    grid = lsq.code_grid(out)
    assert grid.granularity == "per_column" and grid.scale.shape == (5,) and grid.storage_bits == 2

    ctx = QuantContext()
    masked = MaskedQuantizer(FakeQuantize(bits=4), ctx, "node")
    ctx.set_mask(torch.tensor([True, False, False, False, False, False]))
    masked.train()(y)
    assert masked.code_grid(y) is None  # row 0 passed in float
    masked.eval()(y)
    assert masked.code_grid(y) is not None

    mixed = MixedQuantizer([FakeQuantize(bits=b) for b in (2, 4, 8)])
    mixed(y)
    assert mixed.code_grid(y) is None  # searching: a mixture of grids
    mixed.select()
    assert mixed.code_grid(mixed(y)).storage_bits == 8


@pytest.mark.parametrize("arch", ["gcn", "gin"])
@pytest.mark.parametrize("scorer", ["aggregated", "layer_input"])
def test_lorap_rounds_the_aggregate_inside_its_kernel(force_triton, monkeypatch, arch, scorer):
    """Vanilla QAT's aggregate quantizer hands its grid to the fused LoRAP head: the same
    outputs, gradients and observed ranges as the quantizer's own pass followed by the head,
    and no fake-quantization pass of its own over the aggregate."""
    from qgnn.kernels import fake_quant
    from qgnn.prompts import PromptConfig, attach_prompts

    graph, x = small_graph(), torch.rand(30, 12, generator=torch.Generator().manual_seed(0))
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = NodeClassifier(arch, 12, 16, 4, num_layers=2, dropout=0.0)
        build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4)).attach(
            model, example=(graph, x))
        attach_prompts(model, PromptConfig(aggregation="lorap", scorer_input=scorer))
        for p in model.parameters():  # V starts at zero: give the heads something to add
            if p.dim() == 2 and p.shape[0] == 2:
                torch.nn.init.normal_(p, std=0.5)
        models.append(model)
    fused, separate = models
    separate.load_state_dict(fused.state_dict())
    aggregate_quantizers = [m.quant["aggregate"] for m in fused.modules() if hasattr(m, "agg_prompt")]
    assert aggregate_quantizers and all(isinstance(q, FakeQuantize) for q in aggregate_quantizers)
    for q in (m.quant["aggregate"] for m in separate.modules() if hasattr(m, "agg_prompt")):
        q.grid_for_consumer = lambda s: None  # the two-pass path

    launches = []
    real = fake_quant._launch
    monkeypatch.setattr(fake_quant, "_launch", lambda x, *a, **kw: launches.append(x.shape) or real(x, *a, **kw))
    for training in (True, False):
        fused.train(training)
        separate.train(training)
        launches.clear()
        out = fused(graph, x)
        fused_passes = len(launches)
        launches.clear()
        ref = separate(graph, x)
        assert fused_passes == len(launches) - 2  # one rounding pass fewer per layer
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
        if training:
            grads = torch.autograd.grad(out.square().sum(), list(fused.parameters()))
            ref_grads = torch.autograd.grad(ref.square().sum(), list(separate.parameters()))
            for (name, _), a, b in zip(fused.named_parameters(), grads, ref_grads):
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    for a, b in zip(fused.buffers(), separate.buffers()):
        assert torch.equal(a, b)


def test_grid_for_consumer_only_where_the_consumer_can_round(force_triton):
    """``None``, and nothing observed, unless the quantizer is per tensor, plain STE, fused,
    and has a range (or is training)."""
    from qgnn.quant.observers import MinMaxObserver

    x = torch.randn(20, 8)
    cases = {
        "clipped": FakeQuantize(4, gradient="clipped"),
        "per_row": FakeQuantize(4, observer=MinMaxObserver(granularity="per_row")),
        "unfused": FakeQuantize(4, fused=False),
    }
    for name, q in cases.items():
        assert q.grid_for_consumer(x) is None, name
        assert not q.observer.ready, name
    q = FakeQuantize(4)
    q.eval()
    assert q.grid_for_consumer(x) is None and not q.observer.ready  # evaluation, no range yet
    q.train()
    grid = q.grid_for_consumer(x)
    assert q.observer.ready and torch.equal(grid.fake_quantize(x), q.quantize(x))
    assert torch.equal(grid.range, torch.stack((x.min(), x.max())))


@pytest.mark.parametrize("arch", ["gcn", "gat"])
def test_lorap_adds_the_layer_bias_inside_its_kernel(force_triton, monkeypatch, arch):
    """A GCN or GAT layer hands its output bias to the fused LoRAP head: the same outputs
    and gradients (the bias's too) as adding it after the head, with the head's forward
    given the bias."""
    from qgnn.kernels import lorap as lk
    from qgnn.prompts import PromptConfig, attach_prompts

    graph, x = small_graph(), torch.rand(30, 12, generator=torch.Generator().manual_seed(1))
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = NodeClassifier(arch, 12, 16, 4, num_layers=2, dropout=0.0, heads=2)
        build_quantization(QuantConfig(method="qat", weight_bits=4, act_bits=4)).attach(
            model, example=(graph, x))
        attach_prompts(model, PromptConfig(aggregation="lorap"))
        for name, p in model.named_parameters():  # V and the biases start at zero
            if name.endswith(".V") or name.endswith(".bias"):
                torch.nn.init.normal_(p, std=0.5)
        models.append(model)
    inside, after = models
    after.load_state_dict(inside.state_dict())
    for m in after.modules():
        if getattr(m, "takes_bias", False):
            m.takes_bias = False  # the layer adds its bias after the head
    biases = []
    real = lk.lorap_forward_triton
    monkeypatch.setattr(lk, "lorap_forward_triton",
                        lambda *a, bias=None, **kw: biases.append(bias) or real(*a, bias=bias, **kw))
    inside.train()
    after.train()
    out = inside(graph, x)
    assert len(biases) == 2 and all(b is not None for b in biases)
    biases.clear()
    ref = after(graph, x)
    assert len(biases) == 2 and all(b is None for b in biases)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), list(inside.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(after.parameters()))
    for (name, _), a, b in zip(inside.named_parameters(), grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("method", ["qat", "dq"])
def test_gcn_without_prompt_adds_its_bias_in_the_aggregate_rounding(force_triton, monkeypatch,
                                                                    method):
    """No prompt: the aggregate quantizer adds the GCN bias in its own rounding pass
    (``forward_add``, vanilla QAT's FakeQuantize; DQ's masked quantizer adds it after), with
    the outputs and gradients of the quantizer followed by the add."""
    from qgnn.kernels import fake_quant

    graph, x = small_graph(), torch.rand(30, 12, generator=torch.Generator().manual_seed(2))
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = NodeClassifier("gcn", 12, 16, 4, num_layers=2, dropout=0.0)
        build_quantization(QuantConfig(method=method, weight_bits=4, act_bits=4)).attach(
            model, example=(graph, x))
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                torch.nn.init.normal_(p, std=0.5)
        models.append(model)
    inside, after = models
    after.load_state_dict(inside.state_dict())
    for conv in after.convs:
        conv.quant["aggregate"].forward_add = None  # the quantizer, then the add
    with_bias = []
    real = fake_quant._launch
    monkeypatch.setattr(fake_quant, "_launch",
                        lambda *a, **kw: with_bias.append(kw.get("bias") is not None) or real(*a, **kw))
    torch.manual_seed(5)
    out = inside(graph, x)
    assert sum(with_bias) == (2 if method == "qat" else 0)
    with_bias.clear()
    torch.manual_seed(5)
    ref = after(graph, x)
    assert sum(with_bias) == 0
    assert torch.equal(out, ref)
    grads = torch.autograd.grad(out.square().sum(), list(inside.parameters()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(after.parameters()))
    for (name, _), a, b in zip(inside.named_parameters(), grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
