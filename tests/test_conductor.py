"""Annealing's step selection: ranked candidates, then as many as the composed model allows."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kondense import transforms, zoo
from kondense.pipeline.conductor import Judge, Option, _composed, _Trials, fit, in_order, ranked
from kondense.pipeline.plan import Step, applied
from kondense.transforms.lowrank import kept_decompositions
from tests.test_attention import _vit
from tests.tinynet import TinyNet


def option(layer: str, harm: float, saving: float, transform: str = "lowrank", coupled=()) -> Option:
    return Option(layer, transform, 0.5, None, saving, list(coupled), harm)


def test_ranked_puts_most_saving_per_unit_of_harm_first() -> None:
    options = [option("a", 1.0, 1.0), option("b", 0.0, 0.5), option("c", 5.0, 4.0), option("d", 0.0, 0.0)]
    # b costs nothing, a saves 1 per unit, c 0.8 per unit; d saves nothing
    assert [o.layer for o in ranked(options)] == ["b", "a", "c"]


def test_ranked_prunes_a_coupled_group_once_and_takes_a_layer_once() -> None:
    options = [
        option("x", 0.1, 2.0, "prune", ["y"]),
        option("y", 0.1, 1.0, "prune", ["x"]),
        option("y", 0.1, 0.5),
        option("x", 0.1, 0.4),
    ]
    assert [(o.layer, o.transform) for o in ranked(options)] == [("x", "prune"), ("y", "lowrank")]


class CountingJudge:
    """Scan accuracy falls by 10 points for every watched layer that was transformed: a composed
    effect that no one-layer-at-a-time prediction shows."""

    def __init__(self, model: torch.nn.Module, watched: list[str]) -> None:
        self.before = {n: self._form(model, n) for n in watched}
        self.calls = 0

    @staticmethod
    def _form(model: torch.nn.Module, name: str):
        m = model.get_submodule(name)
        return (type(m), tuple(m.weight.shape) if hasattr(m, "weight") else None)

    def scan_accuracy(self, model: torch.nn.Module) -> float:
        self.calls += 1
        return 90.0 - 10.0 * sum(self._form(model, n) != form for n, form in self.before.items())


def test_fit_takes_the_longest_prefix_whose_composed_model_stays_above_the_floor() -> None:
    model = TinyNet().eval()
    example = torch.zeros(2, 1, 28, 28)
    picks = [option("features.3", 0, 3.0, "prune"), option("fc1", 0, 2.0), option("features.0", 0, 1.0, "prune")]
    options = [picks[2], picks[0], picks[1]]  # as the scan lists them: model order
    names = [o.layer for o in picks]
    judge = CountingJudge(model, names)
    steps, acc = fit(model, picks, options, judge, example, 90.0, floor=75.0)
    assert [s.layer for s in steps] == ["features.3"], steps  # two transformed layers cost 20 points: below 75
    assert acc == 80.0
    assert judge.calls <= 3  # a binary search over 3 prefixes
    assert model.features[3].weight.shape[0] == 64  # the model given is never modified

    steps, _ = fit(model, picks, options, CountingJudge(model, names), example, 90.0, floor=0.0)
    assert steps == in_order(picks, options)  # everything fits: prunings first, in model order
    assert [s.layer for s in steps] == ["features.0", "features.3", "fc1"]
    assert fit(model, picks, options, CountingJudge(model, names), example, 90.0, floor=85.0)[0] == []


def test_a_scan_and_its_plan_search_trace_the_model_once(monkeypatch) -> None:
    """The dependency graph is built once per model state: the sensitivity scan's every trial and the
    plan search's every composed probe reuse the scanned model's trace."""
    import torch_pruning as tp

    from kondense.pipeline.conductor import priced, scan

    builds = []
    real_build = tp.DependencyGraph.build_dependency
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    model, example = TinyNet().eval(), torch.zeros(2, 1, 28, 28)
    judge = CountingJudge(model, ["features.0", "features.3", "features.6", "fc1"])
    options = scan(model, judge, example, (0.5, 0.25), "params", {"fc2"})
    assert {(o.layer, o.transform) for o in options} >= {("features.0", "prune"), ("fc1", "prune"), ("fc1", "lowrank")}
    assert judge.calls == len(options)
    steps, _ = fit(model, ranked(priced(options, 90.0)), options, judge, example, 90.0, floor=0.0)
    assert any(s.transform == "prune" for s in steps)
    assert len(builds) == 1


def test_a_screened_scan_measures_only_the_best_estimated_options_of_each_layer(monkeypatch) -> None:
    """scan(screen=k): every option is estimated from one pass of gradients, and of each layer's only the k
    saving most per unit of estimated harm are measured: those are the options the scan returns."""
    import torch_pruning as tp
    from torch.utils.data import DataLoader

    from kondense.pipeline.conductor import estimated, scan
    from tests.tinynet import small_data, trained_tiny

    bundle = small_data()
    model = trained_tiny(bundle, epochs=1)
    # unshuffled, as the judge's: the scan's estimates and these read the same samples
    recal, example = DataLoader(bundle.train, batch_size=64), torch.zeros(2, 1, 28, 28)
    ratios = (0.75, 0.5, 0.25)
    builds = []
    real_build = tp.DependencyGraph.build_dependency
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    every = [o for r in ratios for o in estimated(model, recal, example, r, "params", {"fc2"}, 256)]
    layers = {o.layer for o in every}
    for keep in (1, 2):
        judge = CountingJudge(model, sorted(layers))
        judge.recal, judge.recal_samples = recal, 256
        options = scan(model, judge, example, ratios, "params", {"fc2"}, screen=keep)
        assert judge.calls == len(options) == keep * len(layers)  # every layer here has more than 2 options
        for layer in layers:
            mine = sorted((o for o in every if o.layer == layer), key=lambda o: -o.saving / max(o.harm, 1e-12))
            measured = {(o.transform, o.ratio) for o in options if o.layer == layer}
            assert measured == {(o.transform, o.ratio) for o in mine[:keep]}, layer
        assert all(o.accuracy is not None for o in options)
    assert len(builds) == 1  # one trace of the model, shared by every estimate and measured trial


def test_estimated_harm_grows_as_layers_shrink_and_leaves_the_model_alone() -> None:
    """Annealing's estimates: one pass of gradients prices every candidate; shrinking a layer further
    costs more, a trained network's estimates are not all zero, and the model is left as it was."""
    from kondense.pipeline.conductor import estimated
    from tests.tinynet import small_data, trained_tiny

    bundle = small_data()
    model = trained_tiny(bundle, epochs=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    recal = bundle.loaders(batch_size=64)[0]
    example = torch.zeros(2, 1, 28, 28)
    mild, hard = (estimated(model, recal, example, r, "params", {"fc2"}, 256) for r in (0.75, 0.25))
    assert [(o.layer, o.transform) for o in mild] == [(o.layer, o.transform) for o in hard]
    assert {(o.layer, o.transform) for o in mild} >= {("features.3", "prune"), ("fc1", "lowrank")}
    for m, h in zip(mild, hard, strict=True):
        assert 0 <= m.harm <= h.harm and 0 < m.saving < h.saving, (m, h)
    assert sum(o.harm for o in hard) > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(
        (g is None and p.grad is None) or torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True)
    )


def test_a_factorisation_the_prunings_left_nothing_to_save_is_left_out_of_the_plan() -> None:
    """Pruning a layer's inputs can shrink it until even rank 1 is no smaller (a squeeze-and-excitation
    layer of a few channels): the composed plan drops that factorisation instead of failing."""
    from torch import nn

    from kondense.pipeline.conductor import _composed
    from kondense.pipeline.plan import Step, replay

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 3),
    ).eval()
    example = torch.randn(1, 1, 8, 8)
    steps = [Step("0", "prune", 0.5), Step("3", "lowrank", 0.5)]
    trial, kept = _composed(model, steps, example)
    assert kept == [Step("0", "prune", 0.5)]
    assert trial[3].in_channels == 2 and isinstance(trial[3], nn.Conv2d)
    rebuilt = replay(copy.deepcopy(model), kept, example)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in trial.parameters()]
    # unpruned, the same factorisation still pays and is kept
    assert _composed(model, [Step("3", "lowrank", 0.5)], example)[1] == [Step("3", "lowrank", 0.5)]


PRICED = [
    ("tinynet", "params"),
    ("tinynet", "macs"),
    ("tinynet", "latency"),
    ("mobilenet_v2", "macs"),
    ("vit", "params"),
]


def _priced_model(arch: str) -> tuple[nn.Module, torch.Tensor, set[str]]:
    if arch == "tinynet":
        return TinyNet().eval(), torch.zeros(2, 1, 28, 28), {"fc2"}
    if arch == "mobilenet_v2":
        torch.manual_seed(0)
        return zoo.build("mobilenet_v2", 10, 1).eval(), torch.zeros(2, 1, 28, 28), set()
    return _vit(), torch.zeros(2, 3, 32, 32), {"heads.head"}


@pytest.mark.parametrize(("arch", "objective"), PRICED)
def test_estimates_price_candidates_as_deep_copies_do_without_copying_the_model(arch, objective, monkeypatch):
    """What an estimated candidate saves, and which layers move with it, comes from a copy that shares every
    module the candidate leaves alone: the numbers of a deep copy, without copying a weight, and the model
    left as it was. Head pruning changes its attention in place: it alone is priced on deep copies."""
    copies = []
    real = nn.Parameter.__deepcopy__
    monkeypatch.setattr(nn.Parameter, "__deepcopy__", lambda self, memo: copies.append(1) or real(self, memo))
    model, example, protected = _priced_model(arch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(n, id(m), m.training) for n, m in model.named_modules()]
    made = _Trials(model, example, objective, protected)
    assert len(made.candidates) >= 3
    real_copies, savings = set(), []
    # MobileNet-v2 (depthwise convs, residual groups) has a hundred candidates: every third, at one ratio
    trials = made.candidates[::3] if arch == "mobilenet_v2" else made.candidates
    with kept_decompositions():
        for layer, transform in trials:
            for ratio in (0.5,) if arch == "mobilenet_v2" else (0.5, 0.25):
                before = len(copies)
                saving, coupled = made.priced(layer, transform, ratio)
                if len(copies) > before:
                    real_copies.add(transform)
                deep = applied(model, [Step(layer, transform, ratio)], example)  # a copy of every weight
                saving_on_copy, coupled_on_copy = made._outcome(deep, transform)
                assert saving == pytest.approx(saving_on_copy, rel=1e-9, abs=1e-12), (layer, transform)
                assert coupled == coupled_on_copy, (layer, transform)
                savings.append(saving)
    assert max(savings) > 0  # (a factorisation can cost latency: a negative saving, priced alike)
    assert real_copies == ({"heads"} if arch == "vit" else set())
    assert [(n, id(m), m.training) for n, m in model.named_modules()] == modules
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["tinynet", "mobilenet_v2", "vit"])
def test_trials_and_probes_are_judged_on_copies_that_share_what_they_leave_alone(arch, monkeypatch):
    """The scan's trials and the plans' probes are recalibrated and evaluated on copies that share every module
    their steps leave alone: the same accuracy and logits as a deep copy's, without copying a weight (head
    pruning, which changes its attention in place, still deep-copies), and the model left exactly as it was,
    although BatchNorm rewrote its statistics on every copy."""
    copies = []
    real = nn.Parameter.__deepcopy__
    monkeypatch.setattr(nn.Parameter, "__deepcopy__", lambda self, memo: copies.append(1) or real(self, memo))
    model, example, protected = _priced_model(arch)
    torch.manual_seed(1)
    x = torch.randn(64, *example.shape[1:])
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 10, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=32)  # no shuffle: a deep copy sees the same batches
    judge = Judge(recal=loader, scan=loader, val=loader, recal_samples=64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(n, id(m), m.training) for n, m in model.named_modules()]
    made = _Trials(model, example, "params", protected)
    every = 6 if arch == "mobilenet_v2" else 1  # a hundred candidates there: some of each transform
    trials = [(layer, t, 0.5) for kind in transforms.TRANSFORMS for layer, t in made.candidates if t == kind][::every]
    prunings = [Step(layer, t, r) for layer, t, r in trials if t == "prune"][:3]
    factorisations = [Step(layer, t, r) for layer, t, r in trials if t == "lowrank"][-2:]
    shared, deep = {}, {}
    for kind, copy_of in (("shared", shared), ("deep", deep)):
        for layer, transform, ratio in trials:
            before = len(copies)
            if kind == "shared":
                trial = made.make(layer, transform, ratio)[0]
            else:
                trial = applied(model, [Step(layer, transform, ratio)], example)
            copied_weights = len(copies) > before
            accuracy = judge.scan_accuracy(trial)
            with torch.no_grad():
                copy_of[(layer, transform)] = (accuracy, trial.eval()(x[:8]), copied_weights)
        before = len(copies)
        if kind == "shared":
            probe = _composed(model, prunings + factorisations, example)[0]
        else:
            probe = applied(model, prunings + factorisations, example)
        copied_weights = len(copies) > before
        accuracy = judge.scan_accuracy(probe)
        with torch.no_grad():
            copy_of["probe"] = (accuracy, probe.eval()(x[:8]), copied_weights)
        assert [(n, id(m), m.training) for n, m in model.named_modules()] == modules
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert prunings and factorisations
    for key, (accuracy, logits, copied_weights) in shared.items():
        assert accuracy == deep[key][0], key
        torch.testing.assert_close(logits, deep[key][1], rtol=0, atol=0)
        assert copied_weights == (key != "probe" and key[1] == "heads"), key
        assert deep[key][2]
