"""The `kondense` command."""

from __future__ import annotations

import argparse
import json
import sys

from kondense import logs
from kondense.errors import KondenseError
from kondense.job.spec import (
    BACKENDS,
    DEFAULT_LATENCY_BATCH,
    DEFAULT_LATENCY_RUNTIME,
    DEFAULTS,
    LATENCY_RUNTIMES,
    OBJECTIVES,
    QUANTIZE,
    STAGES,
)
from kondense.pipeline import budget


def _profile(args: argparse.Namespace) -> None:
    from kondense import data, zoo
    from kondense.device import resolve
    from kondense.measure import profile, report
    from kondense.zoo import weights

    bundle = None
    input_shape = data.parse_input_shape(args.input_shape) if args.input_shape else None
    if args.data:
        bundle = data.load(
            args.data,
            input_size=input_shape[1:] if input_shape else None,
            channels=input_shape[0] if input_shape else None,
            test_samples=args.test_samples,
        )
        input_shape = bundle.input_shape
        if args.num_classes is not None and args.num_classes != bundle.num_classes:
            raise KondenseError(
                f"--num-classes {args.num_classes} does not match the {bundle.num_classes} classes of '{args.data}'"
            )
    if input_shape is None:
        raise KondenseError("give --input-shape C,H,W (or --data, to take it from the data set)")
    num_classes = args.num_classes or (bundle.num_classes if bundle else None)
    if num_classes is None:
        raise KondenseError("give --num-classes N (or --data, to take it from the data set)")
    model = zoo.build(args.arch, num_classes, input_shape[0])
    if args.weights:
        weights.load_into(model, args.weights, args.arch, num_classes, input_shape[0])
    model = model.to(resolve(args.device))
    loader = bundle.loaders()[2] if bundle else None
    metrics = profile.profile(model, input_shape, loader)
    if args.json:
        print(json.dumps(metrics.to_dict()))
    else:
        report.print_table(
            report.metrics_table({args.arch: metrics}, title=f"{args.arch}, input {input_shape}, {num_classes} classes")
        )


def _zoo_list(args: argparse.Namespace) -> None:
    from rich.table import Table

    from kondense import zoo
    from kondense.measure import report
    from kondense.zoo import weights

    cached = sorted((weights.home() / "zoo").glob("*.pt")) if (weights.home() / "zoo").exists() else []
    metas = [weights.read_meta(p) or {} for p in cached]
    if args.json:
        print(
            json.dumps(
                {
                    "archs": zoo.list_archs(),
                    "trained": [dict(m, path=str(p)) for p, m in zip(cached, metas, strict=True)],
                }
            )
        )
        return
    table = Table(title=f"kondense zoo (weights under {weights.home() / 'zoo'})")
    for col in ("arch", "trained weights (dataset: test acc, epochs)"):
        table.add_column(col)
    for arch in zoo.list_archs():
        trained = [
            f"{m.get('dataset')}: {m.get('test_accuracy')}%, {m.get('epochs')} ep"
            for m in metas
            if m.get("arch") == arch
        ]
        table.add_row(arch, "; ".join(trained) or "-")
    report.print_table(table)


def _zoo_train(args: argparse.Namespace) -> None:
    from kondense.zoo import build
    from kondense.zoo.training import train_zoo

    build(args.arch)  # an unknown arch fails here, before any data is read
    result = train_zoo(
        args.arch,
        args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        test_samples=args.test_samples,
        out=args.out,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "arch": result.arch,
                    "dataset": result.dataset,
                    "epochs": result.epochs,
                    "testAccuracy": result.test_accuracy,
                    "wallSeconds": result.wall_seconds,
                }
            )
        )


def _model_args(items: list[str]) -> dict:
    """KEY=VALUE pairs, each VALUE read as YAML (so 0.5 is a number, true a boolean, [1, 2] a list)."""
    import yaml

    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise KondenseError(f"--model-arg '{item}' must be KEY=VALUE with KEY a Python identifier")
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise KondenseError(f"--model-arg '{item}': VALUE is not valid YAML: {e}") from None
    return kwargs


def _compress(args: argparse.Namespace) -> None:
    from kondense import data
    from kondense.api import compress
    from kondense.measure import report
    from kondense.pipeline.budget import Budget

    if args.workers > 1 and getattr(args, "comm", None) is None:
        _compress_on_workers(args)
        return
    budget = Budget(
        **{
            k: v
            for k, v in {
                "stage1_epochs": args.stage1_epochs,
                "step_epochs": args.step_epochs,
                "max_steps": args.max_steps,
                "max_samples": args.max_samples,
                "scan_samples": args.scan_samples,
                "ratios": tuple(args.ratios) if args.ratios else None,
                "screen": args.screen,
                "train_samples": args.train_samples,
                "val_samples": args.val_samples,
                "test_samples": args.test_samples,
            }.items()
            if v is not None
        }
    )
    result = compress(
        args.model,
        args.data,
        delta=args.delta,
        stage=args.stage,
        out=args.out,
        arch=args.arch,
        weights=args.weights,
        pretrained=args.pretrained,
        model_kwargs=_model_args(args.model_arg),
        code_dir=args.code_dir,
        input_size=data.parse_input_size(args.input_size) if args.input_size else None,
        augment=args.augment,
        mean=args.mean,
        std=args.std,
        objective=args.objective,
        latency_runtime=args.latency_runtime,
        latency_batch=args.latency_batch,
        quantize=args.quantize,
        device=args.device,
        seed=args.seed,
        budget=budget,
        comm=getattr(args, "comm", None),
    )
    if getattr(args, "comm", None) is not None and not args.comm.is_root:
        return
    if args.json:
        print(json.dumps(result.report))
    else:
        report.print_table(report.plan_table(result.plan.to_dict()))
        report.print_table(report.report_table(result.report))
        print(f"outputs in {result.out}: " + ", ".join(sorted(p.name for p in result.out.iterdir() if p.is_file())))


def _compress_on_workers(args: argparse.Namespace) -> None:
    """The same command on N local processes, through the launcher that pods use."""
    from kondense.launch.stages import rank_command
    from kondense.launch.worker import launch_local

    argv, skip = [], False
    for item in args.argv:  # drop --workers/--backend: each rank runs the plain command
        if skip:
            skip = False
        elif item in ("--workers", "--backend"):
            skip = True
        elif not item.startswith(("--workers=", "--backend=")):
            argv.append(item)
    code = launch_local(args.workers, 1, args.backend, rank_command(*argv))
    if code != 0:
        raise KondenseError(
            f"the {args.workers}-process run failed (exit code {code}); the lines above name the rank; "
            f"run the same command again to resume from the last checkpoint"
        )


def _run(args: argparse.Namespace) -> None:
    from kondense.launch.stages import run_job

    status = run_job(args.manifest, args.pvc_root)
    print(json.dumps(status, indent=None if args.json else 2))
    if status["phase"] != "Succeeded":
        raise KondenseError(f"the job failed: {status['conditions'][-1]['message']}")


def _worker(args: argparse.Namespace) -> None:
    import os

    from kondense.job.worker_env import WorkerEnv
    from kondense.launch.stages import rank_command
    from kondense.launch.worker import run_worker

    code = run_worker(
        WorkerEnv.from_env(os.environ),
        rank_command("job", args.job, "--stage", str(args.stage), "--pvc-root", args.pvc_root),
    )
    if code != 0:
        sys.exit(code)


def _job_stage(args: argparse.Namespace) -> None:
    from kondense.distributed import SingleComm
    from kondense.job import spec
    from kondense.launch.stages import run_stage
    from kondense.launch.termination import fail_message

    comm = getattr(args, "comm", None) or SingleComm()
    try:
        job = spec.load(args.job)
        run_stage(job, args.stage, args.pvc_root, comm)
    except Exception as e:  # the operator shows rank 0's last word as the failure reason
        if comm.is_root:
            fail_message(str(e) if isinstance(e, KondenseError) else f"{type(e).__name__}: {e}", args.stage)
        raise


def _rank(args: argparse.Namespace) -> None:
    """One rank of a multi-process command: join the group the launcher set up, then run it."""
    import os

    from kondense import distributed

    inner = build_parser().parse_args([a for a in args.command if a != "--"])
    inner.comm = distributed.init(
        os.environ.get("KONDENSE_BACKEND", distributed.SINGLE), device=getattr(inner, "device", "auto")
    )
    inner.func(inner)
    # not after a failure: leaving the group waits for every peer, which a failed stage may never bring
    # (the launcher stops them once this process has exited)
    inner.comm.shutdown()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


HIDDEN_COMMANDS = ("job", "_rank")  # started by the launcher, not by users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kondense", description="Compress trained PyTorch models within an accuracy budget."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="the six metrics of a zoo model")
    p.add_argument("--arch", required=True, help="zoo architecture (see 'kondense zoo list')")
    p.add_argument("--num-classes", type=_positive, help="output classes (default: from --data)")
    p.add_argument("--input-shape", help="C,H,W of one input (default: from --data)")
    p.add_argument("--weights", help="a weights file (state dict), loaded with weights_only=True")
    p.add_argument("--data", help="data set name or path; test accuracy is measured on its test split")
    p.add_argument("--test-samples", type=_positive, help="measure accuracy on the first N test samples only")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_profile)

    c = sub.add_parser("compress", help="compress a model within an accuracy budget")
    c.add_argument(
        "--model",
        required=True,
        help="torchvision:NAME (with --weights or --pretrained), package.module:function (your factory), "
        "zoo:ARCH (the zoo's trained weights for --data), or a weights file",
    )
    c.add_argument("--weights", help="the trained state dict of a torchvision:NAME or factory model")
    c.add_argument(
        "--pretrained", help="torchvision's published weights by name (DEFAULT, IMAGENET1K_V1; needs internet)"
    )
    c.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of the torchvision builder or the factory (VALUE read as YAML); repeatable",
    )
    c.add_argument("--code-dir", help="a directory holding the factory's package, when it is not installed")
    c.add_argument("--arch", help="the zoo architecture of a plain state-dict file given as --model")
    c.add_argument("--data", required=True, help="data set name (fashion-mnist) or path (ImageFolder directory, .npz)")
    c.add_argument("--input-size", help="H,W (or S for S x S) the network takes (default: the data's own size)")
    c.add_argument(
        "--augment",
        default="none",
        choices=("none", "crop-flip", "resized-crop-flip"),
        help="training augmentation while fine-tuning (default none)",
    )
    c.add_argument("--mean", type=float, nargs="+", help="the network's normalisation mean per channel")
    c.add_argument("--std", type=float, nargs="+", help="the network's normalisation std per channel")
    c.add_argument("--delta", type=float, required=True, help="allowed top-1 accuracy drop, percentage points")
    c.add_argument(
        "--stage",
        type=int,
        default=DEFAULTS["stage"],
        choices=STAGES,
        help="1: exploration; 2: exploration then annealing; 3: both, then INT8 post-training quantisation of the "
        f"stage 2 model (--quantize int8 implied) (default {DEFAULTS['stage']})",
    )
    c.add_argument("--out", required=True, help="output directory; running again with it resumes a killed run")
    c.add_argument(
        "--objective",
        default=DEFAULTS["objective"],
        choices=OBJECTIVES,
        help=f"what to minimise (default {DEFAULTS['objective']})",
    )
    c.add_argument(
        "--latency-runtime",
        default=DEFAULT_LATENCY_RUNTIME,
        choices=LATENCY_RUNTIMES,
        help="where the model will be deployed: torch (eager, on --device) or onnxruntime (on the CPU); "
        f"--objective latency times its per-layer table there (default {DEFAULT_LATENCY_RUNTIME})",
    )
    c.add_argument(
        "--latency-batch",
        type=int,
        default=DEFAULT_LATENCY_BATCH,
        help="inputs per call in deployment: the latency table's batch, also timed in report.json's latency "
        f"block beside 1 and 32 (default {DEFAULT_LATENCY_BATCH})",
    )
    c.add_argument(
        "--quantize",
        choices=QUANTIZE,
        help="int8: INT8 post-training quantisation of model.onnx after the last stage, kept within delta "
        "(model.int8.onnx; default int8 at stage 3, none otherwise)",
    )
    c.add_argument("--device", default=DEFAULTS["device"], help=f"cpu, cuda or auto (default {DEFAULTS['device']})")
    c.add_argument("--seed", type=int, default=DEFAULTS["seed"], help=f"(default {DEFAULTS['seed']})")
    c.add_argument("--train-samples", type=_positive, help="fine-tune on the first N training samples only")
    c.add_argument("--val-samples", type=_positive, help="decide on the first N validation samples only")
    c.add_argument("--test-samples", type=_positive, help="report on the first N test samples only")
    c.add_argument(
        "--stage1-epochs", type=float, help=f"fine-tuning epochs of stage 1 (default {budget.default('stage1_epochs')})"
    )
    c.add_argument(
        "--step-epochs",
        type=float,
        help=f"fine-tuning epochs per annealing step (default {budget.default('step_epochs')})",
    )
    c.add_argument(
        "--max-steps",
        type=_positive,
        help="annealing steps at most (default: no cap; annealing ends when delta is spent)",
    )
    c.add_argument(
        "--max-samples",
        type=_positive,
        help="training samples processed in all at most; annealing takes no step that would pass it (default: no cap)",
    )
    c.add_argument(
        "--scan-samples",
        type=_positive,
        help=f"validation samples of the sensitivity scan (default {budget.default('scan_samples')})",
    )
    c.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        help=f"layer sizes tried in the stage 1 scan (default {' '.join(map(str, budget.default('ratios')))})",
    )
    c.add_argument(
        "--screen",
        type=_positive,
        metavar="K",
        help="measure only each layer's K most promising scan options, chosen by gradient estimates "
        "(default: measure every option)",
    )
    c.add_argument("--workers", type=_positive, default=1, help="processes on this machine (default 1)")
    c.add_argument(
        "--backend",
        default=DEFAULTS["backend"],
        choices=BACKENDS,
        help=f"how the processes talk (default {DEFAULTS['backend']})",
    )
    c.add_argument(
        "--json", action="store_true", help="print report.json instead of the table (the log goes to stderr, always)"
    )
    c.set_defaults(func=_compress)

    r = sub.add_parser("run", help="run a CompressionJob manifest on this machine, stage after stage")
    r.add_argument("manifest", help="a CompressionJob YAML file (see examples/)")
    r.add_argument("--pvc-root", default="pvc", help="where pvc://CLAIM/... URIs live here (default ./pvc)")
    r.add_argument("--json", action="store_true", help="print the final status as one line of JSON")
    r.set_defaults(func=_run)

    w = sub.add_parser(
        "worker", help="a pod's entry point: this worker's ranks of one stage (reads KONDENSE_* variables)"
    )
    w.add_argument("--job", required=True, help="the CompressionJob manifest")
    w.add_argument("--stage", type=int, required=True, choices=[1, 2])
    w.add_argument("--pvc-root", default="/mnt/pvc", help="where PersistentVolumeClaims are mounted (default /mnt/pvc)")
    w.set_defaults(func=_worker)

    # hidden subcommands: no help= (argparse would list them as ==SUPPRESS==), left out of the metavar below
    j = sub.add_parser("job")  # one rank of one stage; started by `worker` and `run`
    j.add_argument("job")
    j.add_argument("--stage", type=int, required=True, choices=[1, 2])
    j.add_argument("--pvc-root", required=True)
    j.set_defaults(func=_job_stage)

    k = sub.add_parser("_rank")  # one rank of a multi-process command; started by the launcher
    k.add_argument("command", nargs=argparse.REMAINDER)
    k.set_defaults(func=_rank)

    z = sub.add_parser("zoo", help="the model zoo").add_subparsers(dest="zoo_command", required=True)
    zl = z.add_parser("list", help="architectures and cached trained weights")
    zl.add_argument("--json", action="store_true")
    zl.set_defaults(func=_zoo_list)
    zt = z.add_parser("train", help="train an architecture on a data set and cache its weights")
    zt.add_argument("arch")
    zt.add_argument("--dataset", required=True, help="data set name (fashion-mnist) or path")
    zt.add_argument("--epochs", type=_positive, default=3)
    zt.add_argument("--batch-size", type=_positive, default=128)
    zt.add_argument(
        "--lr", type=float, help="peak learning rate of the one-cycle schedule (default 0.1; 0.05 for vgg19)"
    )
    zt.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    zt.add_argument("--train-samples", type=_positive, help="train on the first N samples of the train split only")
    zt.add_argument(
        "--val-samples", type=_positive, help="validate on the first N samples of the validation split only"
    )
    zt.add_argument("--test-samples", type=_positive, help="report accuracy on the first N test samples only")
    zt.add_argument("--out", help="write the weights here instead of the zoo cache ($KONDENSE_HOME/zoo)")
    zt.add_argument("--device", default=DEFAULTS["device"], help=f"cpu, cuda or auto (default {DEFAULTS['device']})")
    zt.add_argument("--precision", default="auto", help="fp32, bf16 or auto (bf16 where the hardware has it)")
    zt.add_argument("--json", action="store_true")
    zt.set_defaults(func=_zoo_train)
    sub.metavar = "{" + ",".join(name for name in sub.choices if name not in HIDDEN_COMMANDS) + "}"
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logs.setup()
    try:
        args.func(args)
    except KondenseError as e:
        print(f"kondense: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kondense: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
