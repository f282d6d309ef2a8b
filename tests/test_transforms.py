"""Per-layer transforms: low-rank factorisation and structured pruning, and replaying them."""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from torch import nn

from kondense import KondenseError, zoo
from kondense.pipeline.plan import cost_under, layer_costs
from kondense.transforms import apply, candidates, copied, optimizable_layers
from kondense.transforms._common import uncalled


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is faster, and OpenMP threads spin badly when a core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def low_rank_linear(c_in: int, c_out: int, rank: int) -> nn.Linear:
    layer = nn.Linear(c_in, c_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(c_out, rank) @ torch.randn(rank, c_in) / rank)
    return layer


def low_rank_conv(c_in: int, c_out: int, k: int, r_in: int, r_out: int, **kw) -> nn.Conv2d:
    """A conv whose weight has multilinear rank (r_out, r_in): Tucker-2 at those ranks is exact."""
    layer = nn.Conv2d(c_in, c_out, k, **kw)
    core, a, b = torch.randn(r_out, r_in, k, k), torch.randn(c_out, r_out), torch.randn(c_in, r_in)
    with torch.no_grad():
        layer.weight.copy_(torch.einsum("rshw,or,is->oihw", core, a, b) / (r_in * r_out))
    return layer


# (layer, input) pairs, the layer at name "1" of a Sequential so it has a parent to be replaced in
LOWRANK_CASES = {
    "linear": (lambda: low_rank_linear(64, 48, 3), (2, 64)),
    "conv1x1": (lambda: low_rank_conv(32, 24, 1, 3, 3, stride=2), (2, 32, 9, 9)),
    "conv3x3": (lambda: low_rank_conv(16, 20, 3, 2, 3, padding=1), (2, 16, 8, 8)),
}


@pytest.mark.parametrize("case", LOWRANK_CASES)
def test_lowrank_is_exact_when_the_rank_suffices(case: str) -> None:
    torch.manual_seed(0)
    make, shape = LOWRANK_CASES[case]
    model, x = nn.Sequential(nn.Identity(), make()), torch.randn(shape)
    before, params = run(model, x), n_params(model)
    assert "lowrank" in candidates(model, "1", example_input=x)
    apply(model, "1", "lowrank", 0.5, x)
    assert isinstance(model[1], nn.Sequential)
    assert len(model[1]) == (2 if case != "conv3x3" else 3)
    assert 0 < n_params(model) <= params / 2
    torch.testing.assert_close(run(model, x), before, atol=1e-4, rtol=1e-4)
    # the factors are ordinary layers again, listed under the old name
    assert optimizable_layers(model) == [f"1.{i}" for i in range(len(model[1]))]


@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (20, 144)], ids=["wide", "tall", "tucker-unfolding"])
def test_the_decomposition_is_the_svd_so_a_truncation_is_the_best_one_of_its_rank(shape) -> None:
    # the factors come from eigenvectors of a Gram matrix; Eckart-Young says the truncated SVD is the best
    # approximation of its rank, so any other factors of that rank would leave a larger error
    from kondense.transforms import lowrank

    torch.manual_seed(2)
    a = torch.randn(*shape, dtype=torch.float64) @ torch.diag(torch.logspace(0, -4, shape[1], dtype=torch.float64))
    u, s, vh = lowrank._svd(a)
    best = torch.linalg.svdvals(a)
    torch.testing.assert_close(s, best, rtol=1e-9, atol=1e-11)
    for k in (1, 5, min(shape) // 2, min(shape)):
        error = (a - u[:, :k] * s[:k] @ vh[:k]).norm()
        torch.testing.assert_close(error, best[k:].norm(), rtol=1e-7, atol=1e-12)
    # dead rows (an all-zero output channel) leave directions of zero singular value, which the Gram matrix
    # gives as 0 or as its rounding's square root: nothing to divide by, and nothing they add
    dead = a.clone()
    dead[::2] = 0
    u, s, vh = lowrank._svd(dead)
    assert torch.isfinite(vh).all() and (s[min((shape[0] + 1) // 2, shape[1]) :] < 1e-6 * s[0]).all()
    torch.testing.assert_close(u * s @ vh, dead, rtol=0, atol=1e-12)
    left, values = lowrank._left_vectors(a)
    assert left.shape == (shape[0], shape[0])
    torch.testing.assert_close(values[: min(shape)], best, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(left.T @ left, torch.eye(shape[0], dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", LOWRANK_CASES)
def test_lowrank_error_shrinks_as_the_ratio_grows(case: str) -> None:
    torch.manual_seed(1)
    make, shape = LOWRANK_CASES[case]
    layer, x = make(), torch.randn(shape)
    with torch.no_grad():
        layer.weight.normal_()  # full rank, so every truncation loses something
    reference = run(layer, x)
    errors = []
    for ratio in (0.15, 0.3, 0.6, 0.9):  # rank 1 of the 1x1 case needs 0.1
        model = nn.Sequential(nn.Identity(), copy.deepcopy(layer))
        params = n_params(model[1])
        apply(model, "1", "lowrank", ratio, x)
        assert n_params(model[1]) <= ratio * params
        errors.append((run(model, x) - reference).norm().item() / reference.norm().item())
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < errors[0]


# (arch, layer, layers that must shrink with it)
PRUNE_CASES = [
    ("resnet18", "stages.1.1.body.3", ["stages.1.0.body.3", "stages.1.0.shortcut.0"]),  # residual-coupled
    ("resnet18_narrow", "stages.1.1.body.3", ["stages.1.0.body.3", "stages.1.0.shortcut.0"]),
    ("resnet50", "stages.0.1.body.6", ["stages.0.0.body.6", "stages.0.0.shortcut.0"]),  # bottleneck expansion
    ("vgg19", "features.20", []),
    ("mobilenet_v2", "features.5.body.6", ["features.4.body.6"]),  # projection conv, residual-coupled
    ("mobilenet_v1", "features.6", ["features.9"]),  # feeds a depthwise conv
    ("densenet121", "features.3.body.5", []),  # concatenated into every later layer of the block
    ("googlenet", "features.0.branch3.3", []),  # one slice of an inception concatenation
    ("lenet5", "features.4", []),  # feeds Flatten: the first Linear loses 25 inputs per channel
]


@pytest.mark.parametrize("arch,name,coupled", PRUNE_CASES, ids=[c[0] for c in PRUNE_CASES])
def test_prune_keeps_every_arch_consistent(arch: str, name: str, coupled: list[str]) -> None:
    torch.manual_seed(0)
    model = zoo.build(arch, num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 28, 28)
    classifier = optimizable_layers(model)[-1]
    assert "prune" in candidates(model, name, {classifier}, example_input=x)
    params, channels = n_params(model), model.get_submodule(name).out_channels
    assert apply(model, name, "prune", 0.5, x) is model
    assert run(model, x).shape == (2, 10)
    assert n_params(model) < params
    assert model.get_submodule(name).out_channels == round(0.5 * channels)
    for other in coupled:
        assert model.get_submodule(other).out_channels == round(0.5 * channels)
    assert model.get_submodule(classifier).out_features == 10


def test_candidates_protect_the_classifier_and_skip_depthwise() -> None:
    model = zoo.build("mobilenet_v1", num_classes=10, in_channels=1).train()
    x = torch.randn(1, 1, 28, 28)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    assert candidates(model, "classifier", {"classifier"}, example_input=x) == ["lowrank"]
    assert candidates(model, "features.3", example_input=x) == []  # depthwise: follows features.0; nothing to factorise
    assert candidates(model, "features.6", example_input=x) == ["prune", "lowrank"]  # no attention: no heads
    assert candidates(model, "features.4", example_input=x) == []  # a BatchNorm
    # inspecting must leave no trace: train flags and BatchNorm statistics as they were
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())


class Fcn(nn.Module):
    """Channels tied to the model input (a residual on it) and to the model output (no classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.tied_in, self.mid, self.out = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(x + self.tied_in(x)))


def test_layers_tied_to_model_input_or_output_are_not_prunable() -> None:
    model, x = Fcn(), torch.randn(1, 3, 8, 8)
    assert "prune" not in candidates(model, "tied_in", example_input=x)
    assert "prune" in candidates(model, "mid", example_input=x)
    assert "prune" not in candidates(model, "out", example_input=x)
    with pytest.raises(KondenseError, match="model output"):
        apply(model, "out", "prune", 0.5, x)
    apply(model, "mid", "prune", 0.5, x)
    assert run(model, x).shape == (1, 4, 8, 8)


class Heads(nn.Module):
    """Two convs added together: their channels are one group, so protecting one protects both."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(x) + self.b(x))


def test_layers_tied_to_a_protected_layer_are_not_prunable() -> None:
    model, x = Heads(), torch.randn(1, 8, 8, 8)
    assert "prune" in candidates(model, "b", example_input=x)
    assert "prune" not in candidates(model, "b", {"a"}, example_input=x)
    with pytest.raises(KondenseError, match="not in the model"):
        candidates(model, "b", {"classifier"}, example_input=x)
    apply(model, "a", "lowrank", 0.9, x)  # protecting "a" now protects the factors it became
    assert "prune" not in candidates(model, "b", {"a"}, example_input=x)
    assert "prune" not in candidates(model, "a.0", {"a"}, example_input=x)
    assert "prune" in candidates(model, "a.0", example_input=x)
    apply(model, "b", "prune", 0.5, x)
    assert model.a[1].out_channels == model.b.out_channels == model.head.in_channels == 4


def test_prune_linear_features() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)), torch.randn(2, 20)
    # group L1: a feature's row in the layer plus its column in the next one
    importance = model[0].weight.abs().sum(1) + model[2].weight.abs().sum(0)
    keep = importance.argsort(descending=True)[:9].sort().values
    expected_rows, expected_cols = model[0].weight[keep].detach().clone(), model[2].weight[:, keep].detach().clone()
    apply(model, "0", "prune", 0.3, x)
    assert (model[0].out_features, model[2].in_features) == (9, 9)
    torch.testing.assert_close(model[0].weight, expected_rows)  # the most important survive, in order
    torch.testing.assert_close(model[2].weight, expected_cols)
    assert run(model, x).shape == (2, 5)


# steps that mix both transforms, including transforms of the factors a 'lowrank' step made
REPLAYS = {
    "resnet18": [
        ("stages.0.0.body.0", "prune", 0.5),
        ("stages.1.0.body.3", "lowrank", 0.3),
        ("stages.1.0.body.3.1", "prune", 0.6),  # the Tucker core: its rank shrinks
        ("fc", "lowrank", 0.5),
    ],
    "mobilenet_v2": [
        ("features.5.body.6", "prune", 0.5),
        ("features.5.body.0", "lowrank", 0.5),
        ("features.5.body.0.1", "prune", 0.5),  # the expansion, and the depthwise conv after it
        ("features.0", "lowrank", 0.7),
    ],
    "lenet5": [
        ("features.4", "prune", 0.5),
        ("classifier.0", "lowrank", 0.25),
        ("classifier.2", "prune", 0.5),
    ],
    "densenet121": [
        ("features.0", "prune", 0.5),
        ("features.3.body.5", "lowrank", 0.5),
        ("features.7.2", "prune", 0.25),  # a transition conv
    ],
}


@pytest.mark.parametrize("arch", REPLAYS)
def test_replaying_steps_rebuilds_the_structure_and_scripts(arch: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    trained = zoo.build(arch, 10, 1)
    with torch.no_grad():  # "trained": weights and statistics no fresh model would have
        for p in trained.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in trained.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    for step in REPLAYS[arch]:
        apply(trained, *step, example_input=x)
    fresh = zoo.build(arch, 10, 1)
    for step in REPLAYS[arch]:
        apply(fresh, *step, example_input=x)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    expected = run(trained, x)
    torch.testing.assert_close(run(fresh, x), expected, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, still what deployment targets read
        traced = torch.jit.trace(trained, x)
        scripted = torch.jit.script(trained)
    torch.testing.assert_close(traced(x), expected)
    torch.testing.assert_close(scripted(x), expected)


def test_errors_say_what_is_wrong() -> None:
    model, x = Fcn(), torch.randn(1, 3, 8, 8)
    with pytest.raises(KondenseError, match="unknown transform 'quantize'"):
        apply(model, "mid", "quantize", 0.5, x)
    with pytest.raises(KondenseError, match="no layer 'nope'"):
        apply(model, "nope", "prune", 0.5, x)
    with pytest.raises(KondenseError, match="no layer 'nope'"):
        candidates(model, "nope", example_input=x)
    for ratio in (0, 1.5, -0.2, float("nan")):
        with pytest.raises(KondenseError, match="ratio"):
            apply(model, "mid", "lowrank", ratio, x)
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    with pytest.raises(KondenseError, match="'lowrank' does not apply"):
        apply(depthwise, "0", "lowrank", 0.5, torch.randn(1, 4, 6, 6))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply(model, "mid", "lowrank", 1.0, x) is model
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and len(state) == len(
        model.state_dict()
    )


def test_layer_costs_match_hand_counts() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).train()
    x = torch.randn(2, 3, 32, 32)
    costs = layer_costs(model, x)  # (params, MACs) for one sample
    assert costs == {
        "0": (8 * 3 * 9 + 8, 9 * 3 * 8 * 16 * 16),
        "1": (8 * 9, 9 * 1 * 8 * 16 * 16),
        "4": (8 * 5 + 5, 8 * 5),
    }
    assert model.training and all(m.training for m in model.modules())  # measuring leaves the mode alone
    apply(model, "0", "lowrank", 0.5, x)  # a factorised layer costs what its parts cost
    r1, r2 = model[0][0].out_channels, model[0][1].out_channels
    # the stride sits on the middle conv, so the first 1x1 runs at full resolution
    assert cost_under(layer_costs(model, x), "0") == (
        3 * r1 + r1 * r2 * 9 + r2 * 8 + 8,
        3 * r1 * 32 * 32 + (r1 * r2 * 9 + r2 * 8) * 16 * 16,
    )


def test_a_layer_that_runs_twice_costs_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    assert layer_costs(Twice(), torch.randn(3, 4)) == {"fc": (4 * 4 + 4, 2 * 4 * 4)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_transforms_stay_on_the_gpu() -> None:
    model = zoo.build("mobilenet_v2", 10, 1).cuda()
    x = torch.randn(2, 1, 28, 28)  # on the CPU on purpose: the model's device wins
    apply(model, "features.5.body.6", "prune", 0.5, x)
    apply(model, "features.5.body.0", "lowrank", 0.5, x)
    apply(model, "features.0", "lowrank", 0.5, x)
    assert all(p.is_cuda for p in model.parameters())
    assert run(model, x.cuda()).shape == (2, 10)


# one step per channel group, as a plan's head holds them: residual-coupled, concatenated, depthwise-fed
PLANNED = {
    "resnet18": ["stages.0.0.body.0", "stages.1.1.body.3", "stages.2.1.body.0"],
    "mobilenet_v2": ["features.5.body.6", "features.4.body.0", "features.7.body.0"],
    "densenet121": ["features.0", "features.3.body.2", "features.7.2"],
    "googlenet": ["features.0.branch3.3", "features.0.branch3.0", "features.1.branch1.0"],
}


@pytest.mark.parametrize("arch", PLANNED)
def test_trials_planned_on_one_trace_equal_pruning_each_copy(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """applied() plans prunings on the model's own graph and cuts a copy: one trace for every trial, and
    the same model as tracing and pruning the copy itself (one step: the very same channels)."""
    import torch_pruning as tp

    from kondense.pipeline.plan import Step, applied

    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    model = zoo.build(arch, 10, 1).eval()
    builds = []
    real_build = tp.DependencyGraph.build_dependency
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    names = PLANNED[arch]
    for name in names:
        for ratio in (0.75, 0.5, 0.25):
            trial = applied(model, [Step(name, "prune", ratio)], x)
            own = apply(copy.deepcopy(model), name, "prune", ratio, x)
            assert [p.shape for p in trial.parameters()] == [p.shape for p in own.parameters()]
            torch.testing.assert_close(run(trial, x), run(own, x), rtol=0, atol=0)
    steps = [Step(name, "prune", 0.5) for name in names]
    together = applied(model, steps, x)
    assert len(builds) == 1 + 3 * len(names)  # the model's one trace; each `own` copy needed its own
    replayed = zoo.build(arch, 10, 1)
    for s in steps:
        apply(replayed, s.layer, s.transform, s.ratio, x)
    replayed.load_state_dict(together.state_dict(), strict=True)
    torch.testing.assert_close(run(replayed, x), run(together, x), rtol=0, atol=0)
    assert n_params(together) < n_params(model)


class StoredWidth(nn.Module):
    """A forward pass that reshapes to a width it stored: the graph sees channels kept, the code breaks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.width, self.fc = nn.Conv2d(3, 8, 3, padding=1), 8, nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.reshape(len(y), self.width, y.shape[2] * y.shape[3]).mean(-1))


def test_a_pruning_that_breaks_the_forward_pass_is_refused_with_reason() -> None:
    model, x = StoredWidth().eval(), torch.randn(1, 3, 6, 6)
    assert candidates(model, "conv", {"fc"}, example_input=x) == ["lowrank"]
    with pytest.raises(KondenseError, match="forward pass fails once it is pruned"):
        apply(model, "conv", "prune", 0.5, x)
    assert model.conv.out_channels == 8 and model(x).shape == (1, 10)  # refused before changing anything


class WeightOnly(nn.Module):
    """`side` is used through its weight only (as nn.MultiheadAttention uses out_proj); `b` shares `a`'s weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.side = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.norm(self.a(x))) @ self.side.weight


@pytest.mark.parametrize("only", [None, ["a"]], ids=["deep", "sharing"])
def test_a_copy_knows_which_layers_its_forward_calls_without_running_it(only: list[str] | None) -> None:
    """copied(): a deep copy, or one that copies only the named modules (and their ancestors) and shares the
    rest; either takes over the original's record of which layers the forward pass calls."""
    model, x = WeightOnly().eval(), torch.randn(2, 6)
    assert uncalled(model, x) == {id(model.side)}
    dup = copied(model, only)
    runs = []
    dup.register_forward_pre_hook(lambda *_: runs.append(1))
    assert uncalled(dup, x) == {id(dup.side)} and runs == []  # known from the original, not run again
    assert dup.b.weight is dup.a.weight  # tied weights stay tied
    assert (dup.side is model.side) == (only is not None) and dup.a is not model.a
    torch.testing.assert_close(dup(x), model(x), rtol=0, atol=0)
    dup.a.weight = nn.Parameter(torch.zeros(6, 6))  # what a pruning's handlers do: reassign
    dup.a.out_features = 5
    assert model.a.weight.abs().sum() > 0 and model.a.out_features == 6  # the original keeps its own
    assert model._forward_pre_hooks == {}


@pytest.mark.parametrize("layer", [nn.Linear(24, 16), nn.Conv2d(8, 12, 3)], ids=["matrix", "tucker"])
def test_the_decomposition_of_one_weight_serves_every_ratio_and_every_copy(layer, monkeypatch) -> None:
    from kondense.transforms import lowrank

    decompositions = []  # each a symmetric eigendecomposition of a Gram matrix (lowrank._left_vectors)
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: decompositions.append(1) or eigh(*a, **k))
    per_layer = 1 if isinstance(layer, nn.Linear) else 2  # Tucker-2: its output and its input unfolding
    expected = {ratio: lowrank._factors(layer, ratio) for ratio in (0.75, 0.5, 0.25)}  # outside: none kept
    assert len(decompositions) == 3 * per_layer and lowrank._DECOMPOSED is None

    decompositions.clear()
    with lowrank.kept_decompositions():
        for ratio in (0.75, 0.5, 0.25):  # the scan: a copy of the layer at each ratio
            got = lowrank._factors(copy.deepcopy(layer), ratio)
            assert all(torch.equal(a, b) for a, b in zip(got, expected[ratio], strict=True))
        assert len(decompositions) == per_layer
        # the same tensor changed in place (fine-tuned) is decomposed again, not served from before
        with torch.no_grad():
            layer.weight.mul_(0.5)
        got = lowrank._factors(layer, 0.5)
        assert len(decompositions) == 2 * per_layer
        outer = list(lowrank._DECOMPOSED)
        with lowrank.kept_decompositions():  # an inner block works with the outer one's, and leaves them
            assert lowrank._DECOMPOSED == outer
        assert lowrank._DECOMPOSED == outer
        for _ in range(lowrank._KEPT + 1):  # what it keeps is bounded: a large layer's SVD is large
            lowrank._factors(copy.deepcopy(layer).apply(_reinitialised), 0.5)
        assert len(lowrank._DECOMPOSED) == lowrank._KEPT
    assert lowrank._DECOMPOSED is None  # and let go after the block
    with torch.no_grad():
        fresh = lowrank._factors(layer, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(got, fresh, strict=True))


def _reinitialised(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        module.reset_parameters()
