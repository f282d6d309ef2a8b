"""The peers a user would otherwise pick, on the same trained original, data and training samples as kondense.

    python benchmarks/peers.py --model F.pt --data fashion-mnist --delta 1 \\
        --train-samples 10000 --samples 49920 \\
        --methods uniform-ce uniform-kd taylor-ce taylor-kd scratch aimet \\
        [--at-ratio 14] --out benchmarks/results/peers-NAME.json

Methods (every one ends with the same fine-tune: kondense's FineTune, SGD nesterov, warm-up then cosine,
for `--samples` training samples; only the loss differs between -ce and -kd):
  uniform-ce / uniform-kd  Torch-Pruning, every prunable group at one ratio, by weight magnitude; the last Linear kept
  taylor-ce / taylor-kd    Torch-Pruning global pruning with first-order Taylor importance (gradients from
                           `--taylor-batches` training batches, counted in the samples)
  scratch                  the same architecture shrunk uniformly to the same parameter count, freshly
                           initialised, trained from scratch with cross-entropy
  aimet                    AIMET-torch: spatial SVD, then channel pruning, each with greedy per-layer ratio
                           selection, then the cross-entropy fine-tune; AIMET lives apart from kondense's
                           environment (--aimet-path DIR); where it does not import, a `skipped` entry says why

For each method: a geometric ladder of parameter ratios (original params / pruned params) from
`--start-ratio`, doubling until the first ratio whose validation accuracy falls more than delta below the
original's, then one bisection step between the last pass and the first fail; the largest passing ratio
is the method's best. Decisions on the validation split; test accuracy on the whole test split is only reported.
`--at-ratio R` adds a trial at kondense's ratio; `--no-search` runs that trial alone. `--device cuda` runs
the originals, the shrunk models and their fine-tunes on a GPU (bf16 autocast, as kondense fine-tunes
there); AIMET's search stays on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from kondense import data as data_mod
from kondense import logs, sources, zoo
from kondense.device import in_mode
from kondense.device import resolve as resolve_device
from kondense.files import save_json
from kondense.measure.profile import accuracy, macs_g, params_m
from kondense.pipeline.distill import FineTune, WithTeacher, cache_teacher
from kondense.zoo.training import PEAK_LR

logger = logging.getLogger("kondense.peers")  # under kondense's logger, so logs.setup() shows it

METHODS = ("uniform-ce", "uniform-kd", "taylor-ce", "taylor-kd", "scratch", "aimet")
# the highest channel-pruning ratio tried when shrinking to a parameter ratio: every group keeps a channel
MAX_CHANNEL_RATIO = 0.995
EVAL_BATCH = 500
AIMET_WHY_NOT = (
    "aimet_torch does not import here. aimet-torch 2.42.0 on PyPI is a pure-Python wheel whose torch requirement "
    "is unpinned, so it installs beside torch 2.14.1, but it needs about 25 packages kondense does not carry "
    "(bokeh<=3.6.3, holoviews, hvplot, panel, onnx, onnxscript, ml_dtypes, osqp, pandas, scikit-learn, scipy, ...); "
    "install them apart from the project's environment (pip install --target DIR) and pass --aimet-path DIR"
)


@dataclass
class Trial:
    ratio: float  # the parameter ratio asked for
    paramsRatio: float  # the one reached (channel counts are whole numbers)
    macsRatio: float
    valAccuracy: float
    testAccuracy: float
    withinDelta: bool
    samples: int
    seconds: float


@dataclass
class Setup:
    """What every method shares: the original, its accuracy, the data and the fine-tune recipe."""

    original: nn.Module
    arch: str
    bundle: data_mod.DataBundle
    teacher_data: WithTeacher
    val: DataLoader
    test: DataLoader
    example: torch.Tensor
    params: float
    macs: float
    val_accuracy: float
    test_accuracy: float
    delta: float
    samples: int
    lr: float
    seed: int
    taylor_batches: int
    aimet_candidates: int = 5
    aimet_reconstruction: int = 1000
    aimet_eval_samples: int = 500
    aimet_svd_scores: Path | None = None  # where AIMET's SVD scores of the original are kept between trials

    @property
    def device(self) -> torch.device:
        """Where the original, every shrunk model and its fine-tune run (--device)."""
        return next(self.original.parameters()).device


# ---------------------------------------------------------------- shrinking to a parameter ratio


def last_linear(model: nn.Module) -> nn.Module:
    """The classifier: its outputs are the classes, which no method may prune."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no Linear layer to keep as the classifier")
    return linears[-1]


class _KeepOne(tp.importance.TaylorImportance):
    """Taylor importance that never lets global pruning empty a group: its most important channel is kept."""

    def __call__(self, group, **kwargs):
        imp = super().__call__(group, **kwargs)
        if imp is not None and len(imp) > 0:
            imp = imp.clone()
            imp[imp.argmax()] = float("inf")
        return imp


def prune_uniform(model: nn.Module, channel_ratio: float, example: torch.Tensor) -> None:
    """Every prunable group loses the same share of its channels, the smallest by L2 magnitude."""
    with in_mode(model, training=False):  # tracing must not move BatchNorm statistics
        tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=channel_ratio,
            max_pruning_ratio=MAX_CHANNEL_RATIO,
            ignored_layers=[last_linear(model)],
        ).step()


def prune_taylor(model: nn.Module, channel_ratio: float, example: torch.Tensor) -> None:
    """Global pruning: one threshold over every group's normalised |weight x gradient| (the model holds gradients)."""
    with in_mode(model, training=False):
        tp.pruner.MetaPruner(
            model,
            example,
            importance=_KeepOne(),
            global_pruning=True,
            pruning_ratio=channel_ratio,
            max_pruning_ratio=MAX_CHANNEL_RATIO,
            ignored_layers=[last_linear(model)],
        ).step()


def shrink_to(
    make: Callable[[], nn.Module], prune: Callable[[nn.Module, float, torch.Tensor], None], setup: Setup, target: float
) -> nn.Module | None:
    """The pruned model whose parameter ratio is closest to `target` (bisection on the channel-pruning
    ratio, whose effect on the parameters only the pruner knows), or None if no ratio reaches it."""
    low, high, best, best_gap = 0.0, MAX_CHANNEL_RATIO, None, math.inf
    # first guess: where params fall with the square of the channels kept (every layer's in and out shrink)
    mid = min(MAX_CHANNEL_RATIO, max(0.0, 1 - target**-0.5))
    for _ in range(14):
        model = make()
        prune(model, mid, setup.example)
        reached = setup.params / params_m(model)
        gap = abs(math.log(reached / target))
        if gap < best_gap:
            best, best_gap = model, gap
        if gap < 0.02:
            break
        low, high = (mid, high) if reached < target else (low, mid)
        mid = (low + high) / 2
    if best is None or best_gap > math.log(1.1):  # more than 10% off: the pruner cannot reach it
        return None
    return best


def with_gradients(model: nn.Module, setup: Setup) -> Callable[[], nn.Module]:
    """A factory of copies of `model` holding the cross-entropy gradients of `taylor_batches` training batches
    (deepcopy drops .grad, so they are computed once and put back on every copy)."""
    work = copy.deepcopy(model)
    loader = DataLoader(
        setup.teacher_data.base, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    work.zero_grad()
    with in_mode(work, training=False):  # eval: the gradients of the model as it is, statistics untouched
        for i, (x, y) in enumerate(loader):
            if i >= setup.taylor_batches:
                break
            F.cross_entropy(work(x.to(setup.device)), y.to(setup.device)).backward()
    grads = {n: p.grad.detach().clone() for n, p in work.named_parameters() if p.grad is not None}

    def make() -> nn.Module:
        fresh = copy.deepcopy(model)
        for n, p in fresh.named_parameters():
            if n in grads:
                p.grad = grads[n].clone()
        return fresh

    return make


# ---------------------------------------------------------------- AIMET: spatial SVD, then channel pruning


def _aimet_modules():
    """AIMET's compression API, imported only when asked for (it lives apart from kondense's environment)."""
    from aimet_torch.common.defs import CompressionScheme, CostMetric, GreedySelectionParameters
    from aimet_torch.compress import ModelCompressor
    from aimet_torch.defs import ChannelPruningParameters, SpatialSvdParameters

    return (
        CompressionScheme,
        CostMetric,
        GreedySelectionParameters,
        ModelCompressor,
        ChannelPruningParameters,
        (SpatialSvdParameters),
    )


def _first_conv(model: nn.Module) -> list[nn.Module]:
    """The layer reading the image: AIMET would prune the image's own channels."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][:1]


def aimet_shrink(setup: Setup, target: float) -> tuple[nn.Module, int]:
    """AIMET's recommended sequence: spatial SVD, then channel pruning (with its least-squares
    reconstruction of the next layer's weights), each with greedy per-layer ratio selection on validation
    accuracy and parameters (AIMET's 'memory') as the cost; each takes half the target in log scale.
    Returns the model and the training samples the reconstruction read."""
    scheme, cost, greedy, compressor, cp_params, svd_params = _aimet_modules()
    candidates = setup.aimet_candidates
    shape = (1, *setup.bundle.input_shape)

    # AIMET scores every layer at every candidate ratio: on a part of the validation split, as its
    # eval_iterations intends (the trial's own verdict still reads the whole validation split)
    val = setup.val.dataset
    part = DataLoader(Subset(val, range(min(setup.aimet_eval_samples, len(val)))), batch_size=EVAL_BATCH)

    def evaluate(model: nn.Module, iterations: int | None = None, use_cuda: bool = False) -> float:
        return accuracy(model, part) / 100

    model = copy.deepcopy(setup.original).cpu().eval()  # AIMET's search on the CPU; its result trains on the device
    # the per-layer scores of SVD on the original do not depend on the target: computed once, reused
    saved = setup.aimet_svd_scores if setup.aimet_svd_scores and setup.aimet_svd_scores.exists() else None
    svd = svd_params(
        mode=svd_params.Mode.auto,
        params=svd_params.AutoModeParams(
            greedy(
                target_comp_ratio=Decimal(str(round(target**-0.5, 4))),
                num_comp_ratio_candidates=candidates,
                saved_eval_scores_dict=str(saved) if saved else None,
            ),
            modules_to_ignore=_first_conv(model),
        ),
    )
    model, _ = compressor.compress_model(model, evaluate, 1, shape, scheme.spatial_svd, cost.memory, svd)
    written = Path("data/greedy_selection_eval_scores_dict.pkl")  # AIMET's own name, under the working directory
    if saved is None and setup.aimet_svd_scores and written.exists():
        shutil.copyfile(written, setup.aimet_svd_scores)
    rest = setup.params / target / params_m(model)  # the share of the SVD model's parameters to keep
    if rest >= 1:
        return model.to(setup.device), 0
    loader = DataLoader(
        setup.teacher_data.base, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(2)
    )
    samples = min(setup.aimet_reconstruction, len(setup.teacher_data.base))
    cp = cp_params(
        data_loader=loader,
        num_reconstruction_samples=samples,
        allow_custom_downsample_ops=False,
        mode=cp_params.Mode.auto,
        params=cp_params.AutoModeParams(
            greedy(target_comp_ratio=Decimal(str(round(max(rest, 0.01), 4))), num_comp_ratio_candidates=candidates),
            modules_to_ignore=_first_conv(model),
        ),
    )
    model, _ = compressor.compress_model(model, evaluate, 1, shape, scheme.channel_pruning, cost.memory, cp)
    return model.to(setup.device), samples


# ---------------------------------------------------------------- one trial per method


def fine_tune(model: nn.Module, setup: Setup, loss: str, lr: float | None = None) -> int:
    """kondense's own fine-tune; '-ce' replaces only its distillation loss by the labels' cross-entropy."""
    loss_fn = (lambda s, t, y: F.cross_entropy(s, y)) if loss == "ce" else None
    epochs = setup.samples / len(setup.teacher_data)
    return FineTune(lr=lr or setup.lr, loss_fn=loss_fn).run(model, setup.teacher_data, epochs, setup.seed)


def make_model(method: str, setup: Setup, target: float) -> tuple[nn.Module | None, int]:
    """The shrunk model before training, and the training samples its making used."""
    if method.startswith("uniform"):
        return shrink_to(lambda: copy.deepcopy(setup.original), prune_uniform, setup, target), 0
    if method.startswith("taylor"):
        make = with_gradients(setup.original, setup)
        model = shrink_to(make, prune_taylor, setup, target)
        if model is not None:
            model.zero_grad(set_to_none=True)
        n = min(setup.taylor_batches * 128, len(setup.bundle.train))
        return model, n
    if method == "scratch":
        num_classes, in_channels = setup.bundle.num_classes, setup.bundle.input_shape[0]

        def fresh() -> nn.Module:
            torch.manual_seed(setup.seed)
            return zoo.build(setup.arch, num_classes, in_channels).to(setup.device)

        return shrink_to(fresh, prune_uniform, setup, target), 0
    if method == "aimet":
        with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(workdir):  # AIMET writes ./data/*.pkl
            model, used = aimet_shrink(setup, target)
        if abs(math.log(setup.params / params_m(model) / target)) > math.log(1.1):  # its greedy search fell short
            return None, used
        return model, used
    raise ValueError(f"unknown method '{method}'")


def run_trial(method: str, setup: Setup, target: float) -> Trial | None:
    """Shrink to `target`, train, judge on validation; None if the method cannot reach that ratio."""
    began = time.time()
    model, used = make_model(method, setup, target)
    if model is None:
        logger.info(f"{method}: {target:.1f}x cannot be reached")
        return None
    if method == "scratch":
        used += fine_tune(model, setup, "ce", lr=PEAK_LR.get(setup.arch, 0.1))
    elif method == "aimet":
        used += fine_tune(model, setup, "ce")  # AIMET's own examples fine-tune with the labels
    else:
        used += fine_tune(model, setup, method.rsplit("-", 1)[1])
    val, test = accuracy(model, setup.val), accuracy(model, setup.test)
    trial = Trial(
        ratio=round(target, 2),
        paramsRatio=round(setup.params / params_m(model), 2),
        macsRatio=round(setup.macs / macs_g(model, setup.bundle.input_shape), 2),
        valAccuracy=round(val, 2),
        testAccuracy=round(test, 2),
        withinDelta=val >= setup.val_accuracy - setup.delta,
        samples=used,
        seconds=round(time.time() - began, 1),
    )
    logger.info(
        f"{method}: {trial.paramsRatio}x params, {trial.macsRatio}x MACs: val {trial.valAccuracy:.2f}% "
        f"test {trial.testAccuracy:.2f}% ({'within' if trial.withinDelta else 'beyond'} delta), {trial.seconds:.0f}s"
    )
    return trial


def search(method: str, setup: Setup, start: float, max_ratio: float) -> list[Trial]:
    """Doubling from `start` until the first failure (or halving until the first pass), then one bisection step."""
    trials: list[Trial] = []
    passed: Trial | None = None
    failed: float | None = None
    ratio = start
    while ratio <= max_ratio:
        trial = run_trial(method, setup, ratio)
        if trial is None or not trial.withinDelta:
            failed = ratio
            if trial is not None:
                trials.append(trial)
            break
        trials.append(trial)
        passed, ratio = trial, ratio * 2
    if passed is None:  # the start failed: go down until a ratio passes
        ratio = start / 2
        while ratio >= 1.2:
            trial = run_trial(method, setup, ratio)
            if trial is not None:
                trials.append(trial)
                if trial.withinDelta:
                    passed = trial
                    break
            failed, ratio = ratio, ratio / 2
    if passed is not None and failed is not None:
        trial = run_trial(method, setup, math.sqrt(passed.ratio * failed))
        if trial is not None:
            trials.append(trial)
    return trials


def run_method(method: str, setup: Setup, args: argparse.Namespace) -> dict:
    if method == "aimet":
        if args.aimet_path:
            sys.path.append(str(Path(args.aimet_path).resolve()))  # after the venv's own: torch stays kondense's
        if importlib.util.find_spec("aimet_torch") is None:
            logger.info(f"aimet: skipped: {AIMET_WHY_NOT}")
            return {"method": "aimet", "skipped": AIMET_WHY_NOT}
        scores = tempfile.TemporaryDirectory()
        setup.aimet_svd_scores = Path(scores.name) / "svd_scores.pkl"
    began = time.time()
    trials = [] if args.no_search else search(method, setup, args.start_ratio, args.max_ratio)
    at_ratio = None
    if args.at_ratio:
        same = [t for t in trials if abs(math.log(t.ratio / args.at_ratio)) < 0.01]
        trial = same[0] if same else run_trial(method, setup, args.at_ratio)
        if trial is not None:
            if not same:
                trials.append(trial)
            at_ratio = {"ratio": trial.paramsRatio, "testAccuracy": trial.testAccuracy}
    passing = [t for t in trials if t.withinDelta] if not args.no_search else []  # one trial is no search
    best = max(passing, key=lambda t: t.paramsRatio) if passing else None
    return {
        "method": method,
        "bestRatio": best.paramsRatio if best else None,
        "testAccuracyAtBest": best.testAccuracy if best else None,
        "macsRatioAtBest": best.macsRatio if best else None,
        "atRatio": at_ratio,
        # the training samples of one compression at the best ratio, as a user would spend them
        "samples": best.samples if best else setup.samples,
        "seconds": round(time.time() - began, 1),
        "trials": [asdict(t) for t in trials],
    }


# ---------------------------------------------------------------- set-up, table, entry point


def as_tensors(dataset: Dataset) -> TensorDataset:
    """The split as two tensors: a Subset of a TensorDataset (the named data sets) is indexed at once,
    anything else is read once through a loader. Evaluating 10,000 images item by item costs more than
    the small models' forward passes."""
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        index = torch.as_tensor(dataset.indices)
        return TensorDataset(*(t[index] for t in dataset.dataset.tensors))
    xs, ys = zip(*DataLoader(dataset, batch_size=1024), strict=True)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def prepare(args: argparse.Namespace) -> Setup:
    bundle = data_mod.load(args.data, seed=args.seed, train_samples=args.train_samples, val_samples=args.val_samples)
    content_shape = bundle.input_shape
    original, base, _ = sources.load_model(
        args.model, sources.ModelOptions(arch=args.arch), args.data, bundle.num_classes, content_shape
    )
    device = resolve_device(args.device)
    original.eval().to(device)
    arch = base.get("arch") or args.arch
    train = as_tensors(bundle.train)
    val = DataLoader(as_tensors(bundle.val), batch_size=EVAL_BATCH)
    test = DataLoader(as_tensors(bundle.test), batch_size=EVAL_BATCH)
    began = time.time()
    val_accuracy, test_accuracy = accuracy(original, val), accuracy(original, test)
    logger.info(
        f"original {arch}: {params_m(original):.3f}M params, val {val_accuracy:.2f}%, test {test_accuracy:.2f}% "
        f"on {len(bundle.test)} test images ({time.time() - began:.0f}s)"
    )
    return Setup(
        original=original,
        arch=arch,
        bundle=bundle,
        teacher_data=cache_teacher(original, train),
        val=val,
        test=test,
        example=torch.zeros(1, *content_shape, device=device),
        params=params_m(original),
        macs=macs_g(original, content_shape),
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        delta=args.delta,
        samples=args.samples,
        lr=args.lr,
        seed=args.seed,
        taylor_batches=args.taylor_batches,
        aimet_candidates=args.aimet_candidates,
        aimet_reconstruction=args.aimet_reconstruction,
        aimet_eval_samples=args.aimet_eval_samples,
    )


def table(result: dict) -> str:
    o = result["original"]
    lines = [
        f"{result['arch']} on {result['data']}, delta {result['delta']}, original test {o['testAccuracy']:.2f}%",
        f"{'method':<12} {'params x':>9} {'MACs x':>8} {'test %':>8} {'drop':>7} {'at ratio':>16} {'samples':>9} "
        f"{'seconds':>8}",
    ]
    for m in result["methods"]:
        if "skipped" in m:
            lines.append(f"{m['method']:<12} skipped: {m['skipped'][:80]}...")
            continue
        at = m["atRatio"]
        at_text = f"{at['testAccuracy']:.2f}% @{at['ratio']:.1f}x" if at else "-"
        if m["bestRatio"] is None:
            lines.append(f"{m['method']:<12} {'none':>9} {'-':>8} {'-':>8} {'-':>7} {at_text:>16} {m['samples']:>9} "
                         f"{m['seconds']:>8.0f}")  # fmt: skip
            continue
        drop = o["testAccuracy"] - m["testAccuracyAtBest"]
        lines.append(
            f"{m['method']:<12} {m['bestRatio']:>9.1f} {m['macsRatioAtBest']:>8.1f} {m['testAccuracyAtBest']:>8.2f} "
            f"{drop:>+7.2f} {at_text:>16} {m['samples']:>9} {m['seconds']:>8.0f}"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a zoo weights file (kondense zoo train ... --out F)")
    parser.add_argument("--arch", help="the architecture, for a plain state dict")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--delta", type=float, default=1.0, help="allowed validation accuracy drop, points")
    parser.add_argument("--train-samples", type=int, help="the training subset, as kondense's --train-samples")
    parser.add_argument("--val-samples", type=int, help="the validation subset the decisions use")
    parser.add_argument("--samples", type=int, required=True, help="training samples of each fine-tune")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--at-ratio", type=float, help="also report the accuracy at this parameter ratio")
    parser.add_argument("--no-search", action="store_true", help="only the --at-ratio trial")
    parser.add_argument("--start-ratio", type=float, default=2.0)
    parser.add_argument("--max-ratio", type=float, default=1024.0)
    parser.add_argument("--lr", type=float, default=0.02, help="fine-tune peak learning rate (kondense's default)")
    parser.add_argument("--taylor-batches", type=int, default=8)
    parser.add_argument("--aimet-path", help="a directory holding aimet_torch and its packages (pip install --target)")
    parser.add_argument("--aimet-candidates", type=int, default=5, help="AIMET greedy: ratios tried per layer")
    parser.add_argument("--aimet-reconstruction", type=int, default=1000, help="AIMET channel pruning: samples")
    parser.add_argument("--aimet-eval-samples", type=int, default=500, help="AIMET greedy: validation samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (fine-tunes in bf16 where native, as kondense does)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    logs.setup()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.time()
    setup = prepare(args)
    result = {
        "model": str(args.model),
        "arch": setup.arch,
        "data": args.data,
        "device": str(setup.device),
        "delta": args.delta,
        "trainSamples": len(setup.bundle.train),
        "samples": args.samples,
        "command": "python benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "original": {
            "valAccuracy": round(setup.val_accuracy, 2),
            "testAccuracy": round(setup.test_accuracy, 2),
            "testImages": len(setup.bundle.test),
            "paramsM": round(setup.params, 4),
            "macsG": round(setup.macs, 5),
        },
        "methods": [],
    }
    for method in args.methods:
        result["methods"].append(run_method(method, setup, args))
        save_json(result, args.out)  # after every method, so a long run shows what it has
    result["seconds"] = round(time.time() - began, 1)
    save_json(result, args.out)
    print(table(result), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
