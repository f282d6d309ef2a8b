"""The `CompressionJob` manifest: parsing, validation, defaults, and the mapping onto the engine.

Shared by `kondense run job.yaml` and the operator, so both accept and refuse the same manifests.
What a manifest may hold, its defaults and bounds are declared once, in the CRD, and checked by
kondense.job.schema as the API server checks them; this module adds what a schema cannot say
(metadata names, relative paths, the data format read off the uri) and maps the result onto the
engine. Torch-free: the operator imports it.

    job = load("job.yaml")                      # or parse(dict) for an object from the API server
    kondense.compress(model_argument(job.spec, "./pvc"), data_argument(job.spec, "./pvc"),
                      out=local_path(job.spec.output_uri, "./pvc"),
                      budget=Budget(**budget_kwargs(job.spec)), **compress_kwargs(job.spec, "./pvc"))

Errors are `SpecError`s naming the field (`spec.budget.ratios[1]`) and saying what is allowed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kondense.job import schema, uris
from kondense.job.schema import SpecError
from kondense.job.uris import local_path

_CRD = schema.crd()["spec"]
_PROPERTIES = schema.spec_schema()["properties"]
# spec's own x-kubernetes-validations without its properties: check_settings holds only some of the fields
_CROSS_FIELD_RULES = {"x-kubernetes-validations": schema.spec_schema().get("x-kubernetes-validations", [])}

API_VERSION = f"{_CRD['group']}/{_CRD['versions'][0]['name']}"
KIND = _CRD["names"]["kind"]
DEFAULT_NAMESPACE = "default"  # where the API server puts an object that names none

# The scalar defaults of `spec`, camelCase, read from the CRD. Interface shared by the CLI,
# kondense.compress and the operator.
DEFAULTS: dict[str, Any] = schema.defaults()
# one name each, for keyword defaults (kondense.compress)
DEFAULT_STAGE, DEFAULT_OBJECTIVE = DEFAULTS["stage"], DEFAULTS["objective"]
DEFAULT_DEVICE, DEFAULT_SEED = DEFAULTS["device"], DEFAULTS["seed"]
BACKENDS = tuple(_PROPERTIES["backend"]["enum"])
DEVICES = tuple(_PROPERTIES["device"]["enum"])
OBJECTIVES = tuple(_PROPERTIES["objective"]["enum"])  # what the conductor can minimise (--objective choices)
QUANTIZE = tuple(_PROPERTIES["quantize"]["enum"])  # the CLI's --quantize choices
MANAGED_BY = tuple(_PROPERTIES["managedBy"]["enum"])  # who owns the suspension of the stage Jobs
MANAGED_BY_OPERATOR, MANAGED_BY_KUEUE = MANAGED_BY
STAGES = tuple(_PROPERTIES["stage"]["enum"])  # the CLI's --stage choices
DATA_FORMATS = tuple(_PROPERTIES["data"]["properties"]["format"]["enum"])
_LATENCY = _PROPERTIES["latency"]["properties"]
LATENCY_RUNTIMES = tuple(_LATENCY["runtime"]["enum"])  # the CLI's --latency-runtime choices
DEFAULT_LATENCY_RUNTIME, DEFAULT_LATENCY_BATCH = _LATENCY["runtime"]["default"], _LATENCY["batch"]["default"]

SPEC_KEYS = tuple(_PROPERTIES)
# camelCase manifest key -> BudgetSpec attribute (also the Budget / compress() keyword)
BUDGET_KEYS = {key: re.sub("([A-Z])", r"_\1", key).lower() for key in _PROPERTIES["budget"]["properties"]}

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class ModelSource:
    """One source of the network: `zoo` (an architecture, with the zoo's weights trained on the job's
    data), `torchvision` (an architecture name; weights at `uri` or published ones named by
    `pretrained`), `factory` ('package.module:function', importable or under `code_uri`; optional
    weights at `uri`), or `uri` alone (a weights file; `arch` names the zoo architecture of a plain
    state dict). `kwargs` go to the torchvision builder or the factory."""

    zoo: str | None = None
    uri: str | None = None
    arch: str | None = None
    torchvision: str | None = None
    pretrained: str | None = None
    factory: str | None = None
    code_uri: str | None = None
    kwargs: dict | None = None


@dataclass(frozen=True)
class DataSource:
    """Exactly one of `dataset` (a name the engine knows) and `uri` (an ImageFolder directory or
    an .npz file). `format` is set whenever `uri` is: given, or inferred from the uri. `input_size`
    is the (H, W) the network takes (None: the data's own), `augment` the training augmentation,
    `mean`/`std` the normalisation (None: measured on the data)."""

    dataset: str | None = None
    uri: str | None = None
    format: str | None = None
    input_size: tuple[int, int] | None = None
    augment: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class BudgetSpec:
    """How much work a run may do. None means "the engine's default" (kondense.pipeline.context.Budget),
    which is deliberately not repeated here so that the two cannot drift apart. The three
    *_samples fields take subsets of the data splits."""

    stage1_epochs: float | None = None
    step_epochs: float | None = None
    max_steps: int | None = None
    max_samples: int | None = None
    scan_samples: int | None = None
    ratios: tuple[float, ...] | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None


@dataclass(frozen=True)
class LatencySpec:
    """Where and at what batch the model will be deployed: the latency objective's table is timed
    there, and report.json's latency block adds this batch."""

    runtime: str = DEFAULT_LATENCY_RUNTIME
    batch: int = DEFAULT_LATENCY_BATCH


@dataclass(frozen=True)
class JobSpec:
    """A validated `spec`, every default (the CRD's) applied, budget fields excepted (see BudgetSpec)."""

    model: ModelSource
    data: DataSource
    delta: float
    output_uri: str
    stage: int
    workers: int
    slots_per_worker: int
    backend: str
    device: str
    objective: str
    latency: LatencySpec
    quantize: str  # resolved: never absent (see resolve_quantize)
    suspend: bool
    seed: int
    budget: BudgetSpec
    resources: dict  # passed through to the pods; not interpreted here
    # Kubernetes only (the operator's): `kondense run` and the CLI ignore them
    max_restarts: int = DEFAULTS["maxRestarts"]  # stage re-creations after infrastructure losses, in all
    restart_on_oom: bool = DEFAULTS["restartOnOOMKilled"]  # an OOMKilled worker counts as such a loss
    active_deadline_s: int | None = None  # each stage Job's spec.activeDeadlineSeconds; None: no limit
    managed_by: str = DEFAULTS["managedBy"]  # kueue.x-k8s.io: Kueue owns the stage Jobs' suspension


@dataclass(frozen=True)
class CompressionJob:
    name: str
    namespace: str
    spec: JobSpec


def check_settings(**values: Any) -> None:
    """Refuse run settings the CompressionJob would refuse, naming the field ("spec.delta").

    Keys are the manifest's camelCase spec keys (delta, stage, objective, backend, device, seed,
    workers, slotsPerWorker, ...); a value of None is skipped. Each value is checked against the
    CRD's schema of that field, so a setting is judged the same way whether it comes from a
    manifest, a flag or the API.
    """
    given = {k: v for k, v in values.items() if v is not None}
    for key in sorted(given, key=lambda k: SPEC_KEYS.index(k) if k in SPEC_KEYS else -1):
        if key not in _PROPERTIES:
            raise SpecError(f"spec.{key}", f"not a CompressionJob setting; known: {', '.join(SPEC_KEYS)}")
        schema.validate(given[key], _PROPERTIES[key], f"spec.{key}", kubernetes=False)
    # the rules between fields (stage 3 and quantize); those naming oldSelf only judge updates and are skipped
    schema.validate(given, _CROSS_FIELD_RULES, "spec", kubernetes=False)


def resolve_quantize(stage: int, quantize: str | None) -> str:
    """What an omitted quantize means: int8 at stage 3 (stage 3 is the INT8 quantisation of the stage 2
    model), none otherwise. The CRD gives it no default so that an explicit none at stage 3 stays visible to
    its rule, which refuses it."""
    if quantize is not None:
        return quantize
    return "int8" if stage == 3 else "none"


def job_stages(stage: int) -> tuple[int, ...]:
    """The stages that run as processes of their own (one Job each on Kubernetes), in order, for `spec.stage`.

    Stage 3 is no Job of its own: it is the tail of stage 2's rank 0 (as `quantize: int8` is after any last
    stage). INT8 calibration and measurement are single-process CPU work in ONNX Runtime on model.onnx, which
    stage 2's rank 0 has just written, with the data splits already loaded; a third Job would start pods
    (on GPU nodes where the job asks for GPUs) only to load the same data again and leave all but one
    process idle, and it would add a stage boundary where there is nothing to hand over but files."""
    return (1,) if stage == 1 else (1, 2)


def run_stage_of(spec_stage: int, job_stage: int) -> int:
    """The `stage` that kondense.compress gets in job stage `job_stage` of a spec asking for `spec_stage`:
    the last Job runs the spec's stage (stage 3 is stage 2's tail), earlier ones their own."""
    return spec_stage if job_stage == job_stages(spec_stage)[-1] else job_stage


# ---------------------------------------------------------------------------------------------
# reading a manifest


def load(path: str | Path) -> CompressionJob:
    """Read and validate a one-document YAML manifest.

    Relative plain paths in it are made absolute against the file's directory, so that
    `kondense run examples/job.yaml` means the same thing from any working directory.
    Every error message starts with the file name.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", "no such file", source) from None
    except IsADirectoryError:
        raise SpecError("", "is a directory, not a manifest file", source) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("", f"cannot read it: {e}", source) from None
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        raise SpecError("", f"not valid YAML: {_one_line(e)}", source) from None
    if not documents:
        raise SpecError("", f"empty; expected one {KIND} manifest", source)
    if len(documents) > 1:
        raise SpecError("", f"holds {len(documents)} YAML documents; put exactly one {KIND} in the file", source)
    try:
        return parse(documents[0], base_dir=path.parent)
    except SpecError as e:
        raise SpecError(e.field, e.problem, source) from None


def parse(manifest: Mapping[str, Any], *, base_dir: str | Path | None = None) -> CompressionJob:
    """Validate a manifest (a dict, as from YAML or the Kubernetes API) for a run on one machine
    (`kondense run`, and the workers' own copy) and apply the defaults.

    Raises SpecError on the first problem. With `base_dir`, relative plain paths become
    absolute against it (`load` passes the manifest's directory); without it they stay as
    written. The input is never modified.
    """
    return _parse(manifest, base_dir, kubernetes=False)


def parse_for_kubernetes(body: Mapping[str, Any]) -> CompressionJob:
    """`parse` as the API server judges the object, the CRD's Kubernetes-only rules included (the
    output on a claim: stage 2 continues from stage 1's files there and pods share nothing else).
    The API server has refused such objects since the CRD said so; this also refuses, with the
    same message, those it accepted under an older, laxer CRD."""
    return _parse(body, None, kubernetes=True)


def _parse(manifest: Mapping[str, Any], base_dir: str | Path | None, *, kubernetes: bool) -> CompressionJob:
    if not isinstance(manifest, Mapping):
        raise SpecError("", f"a {KIND} manifest must be a mapping, got {schema.kind_of(manifest)}")
    # what the document is comes first: a ConfigMap should be told it is not a CompressionJob,
    # not that its `data` key is unknown
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if manifest.get(key) != expected:
            raise SpecError(key, f"must be '{expected}', got {schema.show(manifest.get(key))}")
    name, namespace = _metadata(manifest.get("metadata"))
    # status is the operator's: with the status subresource the API server ignores it on create
    valid = schema.validate({k: v for k, v in manifest.items() if k != "status"}, kubernetes=kubernetes)
    return CompressionJob(name=name, namespace=namespace, spec=_job_spec(valid["spec"], base_dir))


def _metadata(meta: Any) -> tuple[str, str]:
    """Name and namespace, checked as the API server checks them (the CRD says nothing of metadata)."""
    if meta is not None and not isinstance(meta, Mapping):
        raise SpecError("metadata", f"must be a mapping, got {schema.kind_of(meta)}")
    name = (meta or {}).get("name")
    if name is None:
        raise SpecError("metadata.name", "missing; every CompressionJob needs a name")
    if not isinstance(name, str) or len(name) > 253 or not all(_DNS1123_LABEL.fullmatch(p) for p in name.split(".")):
        raise SpecError(
            "metadata.name",
            f"{schema.show(name)} is not a DNS-1123 subdomain: at most 253 lowercase "
            "letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    namespace = meta.get("namespace")
    if namespace is None:
        return name, DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        raise SpecError(
            "metadata.namespace",
            f"{schema.show(namespace)} is not a DNS-1123 label: at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name, namespace


def _job_spec(spec: dict, base_dir: str | Path | None) -> JobSpec:
    """The dataclasses of a spec the schema accepted, defaults applied."""

    def where(uri: str | None) -> str | None:
        return uris.absolute(uri, base_dir) if uri is not None and base_dir is not None else uri

    model, data, budget = spec["model"], spec["data"], spec.get("budget", {})
    # the CRD refuses a format that contradicts the uri as written; an omitted one is read off it the same way
    data_format = data.get("format")
    if data_format is None and "uri" in data:
        data_format = "npz" if data["uri"].endswith(".npz") else "imagefolder"
    kinds = {key: sub["type"] for key, sub in _PROPERTIES["budget"]["properties"].items()}
    values = {
        BUDGET_KEYS[key]: tuple(map(float, v)) if kinds[key] == "array" else float(v) if kinds[key] == "number" else v
        for key, v in budget.items()
    }
    size = data.get("inputSize")
    normalize = data.get("normalize", {})
    return JobSpec(
        model=ModelSource(
            zoo=model.get("zoo"),
            uri=where(model.get("uri")),
            arch=model.get("arch"),
            torchvision=model.get("torchvision"),
            pretrained=model.get("pretrained"),
            factory=model.get("factory"),
            code_uri=where(model.get("codeUri")),
            kwargs=copy.deepcopy(model.get("kwargs")),
        ),
        data=DataSource(
            dataset=data.get("dataset"),
            uri=where(data.get("uri")),
            format=data_format,
            input_size=None if size is None else (size[0], size[-1]),
            augment=data["augment"],
            mean=tuple(map(float, normalize["mean"])) if normalize else None,
            std=tuple(map(float, normalize["std"])) if normalize else None,
        ),
        delta=float(spec["delta"]),
        output_uri=where(spec["output"]["uri"]),
        stage=spec["stage"],
        workers=spec["workers"],
        slots_per_worker=spec["slotsPerWorker"],
        backend=spec["backend"],
        device=spec["device"],
        objective=spec["objective"],
        latency=LatencySpec(**spec["latency"]),
        quantize=resolve_quantize(spec["stage"], spec.get("quantize")),
        suspend=spec["suspend"],
        seed=spec["seed"],
        budget=BudgetSpec(**values),
        resources=spec.get("resources", {}),
        max_restarts=spec["maxRestarts"],
        restart_on_oom=spec["restartOnOOMKilled"],
        active_deadline_s=spec.get("activeDeadlineSeconds"),
        managed_by=spec["managedBy"],
    )


# ---------------------------------------------------------------------------------------------
# back to a manifest, and on to the engine


def to_manifest(job: CompressionJob) -> dict:
    """The camelCase manifest of `job`, defaults filled in: what `parse` accepts back unchanged.

    Budget fields left to the engine's defaults are left out (the defaults live in the engine).
    """
    s = job.spec
    m, d = s.model, s.data
    model = {
        "zoo": m.zoo,
        "torchvision": m.torchvision,
        "factory": m.factory,
        "codeUri": m.code_uri,
        "kwargs": copy.deepcopy(m.kwargs),
        "uri": m.uri,
        "arch": m.arch,
        "pretrained": m.pretrained,
    }
    data = {
        "dataset": d.dataset,
        "uri": d.uri,
        "format": d.format,
        "inputSize": list(d.input_size) if d.input_size else None,
        "augment": d.augment,
        "normalize": {"mean": list(d.mean), "std": list(d.std)} if d.mean is not None else None,
    }
    model = {k: v for k, v in model.items() if v is not None}
    data = {k: v for k, v in data.items() if v is not None}
    budget = {}
    for key, attr in BUDGET_KEYS.items():
        v = getattr(s.budget, attr)
        if v is not None:
            budget[key] = list(v) if attr == "ratios" else v
    spec = {
        "model": model,
        "data": data,
        "delta": s.delta,
        "stage": s.stage,
        "workers": s.workers,
        "slotsPerWorker": s.slots_per_worker,
        "backend": s.backend,
        "device": s.device,
        "objective": s.objective,
        "latency": {"runtime": s.latency.runtime, "batch": s.latency.batch},
        "quantize": s.quantize,
        "output": {"uri": s.output_uri},
        "suspend": s.suspend,
        "seed": s.seed,
        "budget": budget,
        "resources": copy.deepcopy(s.resources),
        "maxRestarts": s.max_restarts,
        "restartOnOOMKilled": s.restart_on_oom,
        "managedBy": s.managed_by,
    }
    if s.active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = s.active_deadline_s
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job.name, "namespace": job.namespace},
        "spec": spec,
    }


def claims(spec: JobSpec) -> tuple[str, ...]:
    """The PersistentVolumeClaims the job reads or writes, sorted: the volumes its pods mount."""
    named = (uris.claim(u) for u in (spec.model.uri, spec.model.code_uri, spec.data.uri, spec.output_uri))
    return tuple(sorted({c for c in named if c is not None}))


def compress_kwargs(spec: JobSpec, pvc_root: str | Path) -> dict:
    """Keyword arguments for kondense.compress besides model, data, out and budget; paths local
    under `pvc_root` (where the pods mount the claims)."""
    m, d = spec.model, spec.data
    from_source = m.torchvision is not None or m.factory is not None
    return {
        "delta": spec.delta,
        "stage": spec.stage,
        "objective": spec.objective,
        "latency_runtime": spec.latency.runtime,
        "latency_batch": spec.latency.batch,
        "quantize": spec.quantize,
        "device": spec.device,
        "seed": spec.seed,
        "arch": m.arch,
        "weights": str(local_path(m.uri, pvc_root)) if from_source and m.uri is not None else None,
        "pretrained": m.pretrained,
        "model_kwargs": copy.deepcopy(m.kwargs),
        "code_dir": str(local_path(m.code_uri, pvc_root)) if m.code_uri is not None else None,
        "input_size": d.input_size,
        "augment": d.augment,
        "mean": list(d.mean) if d.mean is not None else None,
        "std": list(d.std) if d.std is not None else None,
    }


def budget_kwargs(spec: JobSpec) -> dict:
    """Keyword arguments for kondense.pipeline.context.Budget: only the fields the manifest gave, so the
    engine's defaults apply to the rest."""
    out = {attr: getattr(spec.budget, attr) for attr in BUDGET_KEYS.values()}
    return {k: v for k, v in out.items() if v is not None}


def model_argument(spec: JobSpec, pvc_root: str | Path) -> str:
    """compress()'s `model`: 'zoo:ARCH', 'torchvision:NAME', the factory's 'package.module:function',
    or the local path of the weights file."""
    m = spec.model
    if m.zoo is not None:
        return f"zoo:{m.zoo}"
    if m.torchvision is not None:
        return f"torchvision:{m.torchvision}"
    if m.factory is not None:
        return m.factory
    return str(local_path(m.uri, pvc_root))


def data_argument(spec: JobSpec, pvc_root: str | Path) -> str:
    """compress()'s `data`: the data set's name, or the local path of the data's uri."""
    if spec.data.dataset is not None:
        return spec.data.dataset
    return str(local_path(spec.data.uri, pvc_root))


# ---------------------------------------------------------------------------------------------
# YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML keeps the last one silently, which would
    hide a second `delta:` as surely as a typo hides the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden, by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _one_line(error: yaml.YAMLError) -> str:
    """'line 3, column 5: found duplicate key 'delta'' rather than PyYAML's multi-line report,
    which quotes the source and calls the file "<unicode string>"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
