"""The `CompressionJob` manifest: parsing, validation, defaults, and the mapping onto the engine.

One module, shared by `kondense run job.yaml` (one machine) and the Kubernetes operator, so
both accept and reject exactly the same manifests. The operator must not import torch, so
this module uses only the standard library and PyYAML; importing it keeps torch unloaded.

    job = load("job.yaml")                      # or parse(dict) for an object from the API server
    kondense.compress(model_argument(job.spec, "./pvc"), data_argument(job.spec, "./pvc"),
                      out=local_path(job.spec.output_uri, "./pvc"),
                      budget=Budget(**budget_kwargs(job.spec)), **compress_kwargs(job.spec))

Validation stops at the first problem and raises `SpecError`, whose `field` is the dotted
path of the offending field (e.g. `spec.budget.ratios[1]`) and whose message says what is
wrong and what is allowed. Unknown keys are errors everywhere under `spec`: a typo such as
`delat` must fail loudly instead of silently running with the default.

URIs name models, data and outputs:
    pvc://CLAIM/path   a path inside PersistentVolumeClaim CLAIM (mounted at PVC_ROOT/CLAIM)
    file:///abs/path   an absolute local path
    path               a plain local path; `load` resolves a relative one against the
                       manifest file's directory, so a manifest means the same from any cwd
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping
from urllib.parse import unquote

import yaml

from kondense.errors import KondenseError

API_VERSION = "kondense.dev/v1alpha1"
KIND = "CompressionJob"

BACKENDS = ("horovod", "torch")
DEVICES = ("cpu", "cuda", "auto")
OBJECTIVES = ("params", "macs")  # what the conductor can minimise (it imports this list)
DATA_FORMATS = ("imagefolder", "npz")

DEFAULT_NAMESPACE = "default"
DEFAULT_STAGE = 2
DEFAULT_WORKERS = 1
DEFAULT_SLOTS_PER_WORKER = 1
DEFAULT_BACKEND = "horovod"
DEFAULT_DEVICE = "auto"
DEFAULT_OBJECTIVE = "params"
DEFAULT_SEED = 0

# The keys a manifest may hold at each level. `status` is written by the operator and ignored
# here; metadata is Kubernetes' own (labels, uid, resourceVersion, ...), so only name and
# namespace are read from it and nothing else in it is refused.
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
SPEC_KEYS = ("model", "data", "delta", "stage", "workers", "slotsPerWorker", "backend", "device", "objective",
             "output", "suspend", "seed", "budget", "resources")
MODEL_KEYS = ("zoo", "uri", "arch")
DATA_KEYS = ("dataset", "uri", "format")
OUTPUT_KEYS = ("uri",)
# camelCase manifest key -> BudgetSpec attribute (also the Budget / compress() keyword)
BUDGET_KEYS = {
    "stage1Epochs": "stage1_epochs",
    "stepEpochs": "step_epochs",
    "maxSteps": "max_steps",
    "scanSamples": "scan_samples",
    "ratios": "ratios",
    "trainSamples": "train_samples",
    "valSamples": "val_samples",
    "testSamples": "test_samples",
}

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class SpecError(KondenseError):
    """A manifest that cannot run, and where: `field` is the dotted path of the offending field
    ("spec.delta", "spec.budget.ratios[1]"; "" for the document as a whole), so the CLI can print
    it and the operator can put it in the CompressionJob's status without parsing the message."""

    def __init__(self, field: str, problem: str, source: str | None = None):
        self.field = field
        self.problem = problem
        self.source = source
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self):  # the default would call __init__ with the message alone
        return (type(self), (self.field, self.problem, self.source))


@dataclass(frozen=True)
class ModelSource:
    """Exactly one of `zoo` (an architecture, with the zoo's weights trained on the job's data)
    and `uri` (a weights file); `arch` names the architecture of a plain state dict at `uri`."""

    zoo: str | None = None
    uri: str | None = None
    arch: str | None = None


@dataclass(frozen=True)
class DataSource:
    """Exactly one of `dataset` (a name the engine knows) and `uri` (an ImageFolder directory or
    an .npz file). `format` is set whenever `uri` is: given, or inferred from the path the way
    the engine reads it (`.npz` -> npz, anything else -> imagefolder)."""

    dataset: str | None = None
    uri: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class BudgetSpec:
    """How much work a run may do. None means "the engine's default" (kondense.pipeline.context.Budget),
    which is deliberately not repeated here so that the two cannot drift apart. The three
    *_samples fields take subsets of the data splits (compress()'s train/val/test_samples)."""

    stage1_epochs: float | None = None
    step_epochs: float | None = None
    max_steps: int | None = None
    scan_samples: int | None = None
    ratios: tuple[float, ...] | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None


@dataclass(frozen=True)
class JobSpec:
    """A validated `spec`, every default applied (budget fields excepted, see BudgetSpec)."""

    model: ModelSource
    data: DataSource
    delta: float
    output_uri: str
    stage: int = DEFAULT_STAGE
    workers: int = DEFAULT_WORKERS
    slots_per_worker: int = DEFAULT_SLOTS_PER_WORKER
    backend: str = DEFAULT_BACKEND
    device: str = DEFAULT_DEVICE
    objective: str = DEFAULT_OBJECTIVE
    suspend: bool = False
    seed: int = DEFAULT_SEED
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    resources: dict = field(default_factory=dict)  # passed through to the pods; not interpreted here


@dataclass(frozen=True)
class CompressionJob:
    name: str
    namespace: str
    spec: JobSpec


# The scalar defaults of `spec`, camelCase, as the CRD declares them (the CLI's flags default to
# these too). Interface shared by the CLI, kondense.compress and the operator.
DEFAULTS: dict[str, Any] = {"stage": DEFAULT_STAGE, "workers": DEFAULT_WORKERS, "slotsPerWorker": DEFAULT_SLOTS_PER_WORKER,
                            "backend": DEFAULT_BACKEND, "device": DEFAULT_DEVICE, "objective": DEFAULT_OBJECTIVE,
                            "seed": DEFAULT_SEED, "suspend": False}


def check_settings(**values: Any) -> None:
    """Refuse run settings the CompressionJob would refuse, naming the field ("spec.delta").

    Keys are the manifest's camelCase spec keys (delta, stage, objective, backend, device, seed,
    workers, slotsPerWorker); a value of None is skipped. kondense.compress and the CLI call this,
    so a setting is judged the same way whether it comes from a manifest, a flag or the API.
    """
    spec = {k: v for k, v in values.items() if v is not None}
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise SpecError(f"spec.{sorted(unknown)[0]}", "not a CompressionJob setting")
    probe = {"model": {"zoo": "x"}, "data": {"dataset": "x"}, "delta": spec.pop("delta", 1.0), "output": {"uri": "x"}, **spec}
    _spec(probe, None)


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
    """Validate a manifest (a dict, as from YAML or the Kubernetes API) and apply the defaults.

    Raises SpecError on the first problem. With `base_dir`, relative plain paths become
    absolute against it (`load` passes the manifest's directory); without it they stay as
    written. The input is never modified.
    """
    if not isinstance(manifest, Mapping):
        raise SpecError("", f"a {KIND} manifest must be a mapping, got {_kind_of(manifest)}")
    # what the document is comes first: a ConfigMap should be told it is not a CompressionJob,
    # not that its `data` key is unknown
    if manifest.get("apiVersion") != API_VERSION:
        raise SpecError("apiVersion", f"must be '{API_VERSION}', got {_show(manifest.get('apiVersion'))}")
    if manifest.get("kind") != KIND:
        raise SpecError("kind", f"must be '{KIND}', got {_show(manifest.get('kind'))}")
    _check_keys(manifest, TOP_KEYS, "")
    name, namespace = _metadata(manifest.get("metadata"))
    if "spec" not in manifest or manifest["spec"] is None:
        raise SpecError("spec", "missing; a CompressionJob needs at least spec.model, spec.data, spec.delta and spec.output")
    return CompressionJob(name=name, namespace=namespace, spec=_spec(manifest["spec"], base_dir))


def _metadata(meta: Any) -> tuple[str, str]:
    if meta is None:
        raise SpecError("metadata.name", "missing; every CompressionJob needs a name")
    _need_mapping(meta, "metadata")
    name = meta.get("name")
    if name is None:
        raise SpecError("metadata.name", "missing; every CompressionJob needs a name")
    if not isinstance(name, str) or not _is_dns1123_subdomain(name):
        raise SpecError("metadata.name", f"{_show(name)} is not a DNS-1123 subdomain: at most 253 lowercase letters, "
                                         "digits, '-' and '.', starting and ending with a letter or digit")
    namespace = meta.get("namespace")
    if namespace is None:
        namespace = DEFAULT_NAMESPACE
    elif not isinstance(namespace, str) or not _is_dns1123_label(namespace):
        raise SpecError("metadata.namespace", f"{_show(namespace)} is not a DNS-1123 label: at most 63 lowercase "
                                              "letters, digits and '-', starting and ending with a letter or digit")
    return name, namespace


def _spec(spec: Any, base_dir: str | Path | None) -> JobSpec:
    _need_mapping(spec, "spec")
    _check_keys(spec, SPEC_KEYS, "spec")
    model = _model(spec.get("model"), base_dir)
    data = _data(spec.get("data"), base_dir)

    delta = spec.get("delta")
    if delta is None:
        raise SpecError("spec.delta", "missing; give the allowed top-1 accuracy drop in percentage points, in (0, 100]")
    if not _is_number(delta) or not 0 < delta <= 100:
        raise SpecError("spec.delta", f"must be a number of percentage points in (0, 100], got {_show(delta)}")

    stage = _optional(spec, "stage", DEFAULT_STAGE)
    if not _is_int(stage) or stage not in (1, 2):
        raise SpecError("spec.stage", f"must be 1 (exploration) or 2 (exploration then annealing), got {_show(stage)}")
    workers = _positive_int(spec, "workers", DEFAULT_WORKERS, "spec", "pods")
    slots = _positive_int(spec, "slotsPerWorker", DEFAULT_SLOTS_PER_WORKER, "spec", "processes per pod")
    backend = _choice(spec, "backend", DEFAULT_BACKEND, BACKENDS, "spec")
    device = _choice(spec, "device", DEFAULT_DEVICE, DEVICES, "spec")
    objective = _choice(spec, "objective", DEFAULT_OBJECTIVE, OBJECTIVES, "spec")
    output_uri = _output(spec.get("output"), base_dir)

    suspend = _optional(spec, "suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError("spec.suspend", f"must be true or false, got {_show(suspend)}")
    seed = _optional(spec, "seed", DEFAULT_SEED)
    if not _is_int(seed) or seed < 0:
        raise SpecError("spec.seed", f"must be an integer >= 0, got {_show(seed)}")
    budget = _budget(spec.get("budget"))
    resources = _optional(spec, "resources", {})
    _need_mapping(resources, "spec.resources")

    return JobSpec(model=model, data=data, delta=float(delta), output_uri=output_uri, stage=stage, workers=workers,
                   slots_per_worker=slots, backend=backend, device=device, objective=objective, suspend=suspend,
                   seed=seed, budget=budget, resources=_plain_copy(resources))


def _model(model: Any, base_dir: str | Path | None) -> ModelSource:
    where = "spec.model"
    if model is None:
        raise SpecError(where, "missing; give {zoo: ARCH} or {uri: URI} (with arch: ARCH for a plain state dict)")
    _need_mapping(model, where)
    _check_keys(model, MODEL_KEYS, where)
    _exactly_one(model, ("zoo", "uri"), where)
    zoo = _optional_string(model, "zoo", where)
    arch = _optional_string(model, "arch", where)
    if zoo is not None and arch is not None:
        raise SpecError(f"{where}.arch", "only goes with uri: a zoo model's architecture is the zoo name itself")
    uri = _uri(model, where, base_dir)
    return ModelSource(zoo=zoo, uri=uri, arch=arch)


def _data(data: Any, base_dir: str | Path | None) -> DataSource:
    where = "spec.data"
    if data is None:
        raise SpecError(where, "missing; give {dataset: NAME} or {uri: URI} (an ImageFolder directory or an .npz file)")
    _need_mapping(data, where)
    _check_keys(data, DATA_KEYS, where)
    _exactly_one(data, ("dataset", "uri"), where)
    dataset = _optional_string(data, "dataset", where)
    fmt = _optional(data, "format", None)
    if fmt is not None and fmt not in DATA_FORMATS:
        raise SpecError(f"{where}.format", f"must be one of {', '.join(DATA_FORMATS)}, got {_show(fmt)}")
    if dataset is not None and fmt is not None:
        raise SpecError(f"{where}.format", "only goes with uri: a named dataset has a known format")
    uri = _uri(data, where, base_dir)
    if uri is not None:
        # the engine tells the formats apart by the path (an .npz file, else a directory), so a
        # format that disagrees with the path would fail much later, inside the run
        inferred = "npz" if PurePosixPath(uri).suffix == ".npz" else "imagefolder"
        if fmt is not None and fmt != inferred:
            raise SpecError(f"{where}.format", f"is {fmt}, but uri {_show(uri)} names "
                                               f"{'an .npz file' if inferred == 'npz' else 'no .npz file'}; npz data "
                                               "is a file ending in .npz, imagefolder data a directory")
        fmt = inferred
    return DataSource(dataset=dataset, uri=uri, format=fmt)


def _output(output: Any, base_dir: str | Path | None) -> str:
    where = "spec.output"
    if output is None:
        raise SpecError(f"{where}.uri", "missing; give the output directory as {uri: pvc://CLAIM/path} or a path")
    _need_mapping(output, where)
    _check_keys(output, OUTPUT_KEYS, where)
    uri = _uri(output, where, base_dir)
    if uri is None:
        raise SpecError(f"{where}.uri", "missing; give the output directory as pvc://CLAIM/path, file:///path or a path")
    return uri


def _budget(budget: Any) -> BudgetSpec:
    where = "spec.budget"
    if budget is None:
        return BudgetSpec()
    _need_mapping(budget, where)
    _check_keys(budget, tuple(BUDGET_KEYS), where)
    values: dict[str, Any] = {}
    for key in ("stage1Epochs", "stepEpochs"):
        v = budget.get(key)
        if v is not None:
            if not _is_number(v) or not v > 0 or math.isinf(v):
                raise SpecError(f"{where}.{key}", f"must be a number of epochs > 0 (fractions allowed), got {_show(v)}")
            values[BUDGET_KEYS[key]] = float(v)
    for key in ("maxSteps", "scanSamples", "trainSamples", "valSamples", "testSamples"):
        v = budget.get(key)
        if v is not None:
            if not _is_int(v) or v < 1:
                raise SpecError(f"{where}.{key}", f"must be an integer >= 1, got {_show(v)}")
            values[BUDGET_KEYS[key]] = v
    ratios = budget.get("ratios")
    if ratios is not None:
        if not isinstance(ratios, (list, tuple)) or not ratios:
            raise SpecError(f"{where}.ratios", f"must be a non-empty list of fractions in (0, 1), got {_show(ratios)}")
        for i, r in enumerate(ratios):
            if not _is_number(r) or not 0 < r < 1:
                raise SpecError(f"{where}.ratios[{i}]", f"must be a fraction of the layer kept, in (0, 1), got {_show(r)}")
        values["ratios"] = tuple(float(r) for r in ratios)
    return BudgetSpec(**values)


# ---------------------------------------------------------------------------------------------
# URIs


def _uri(holder: Mapping, where: str, base_dir: str | Path | None) -> str | None:
    uri = _optional_string(holder, "uri", where)
    if uri is None:
        return None
    _check_uri(uri, f"{where}.uri")
    if base_dir is not None and _URI_SCHEME.match(uri) is None:
        path = Path(uri).expanduser()
        if not path.is_absolute():
            return os.path.normpath(Path(base_dir).expanduser().absolute() / path)
    return uri


def _check_uri(uri: str, where: str) -> None:
    """pvc://CLAIM[/path], file:///abs/path or a plain path; anything else is refused here,
    before a pod starts, rather than by a process deep inside a run."""
    if not isinstance(uri, str) or not uri:
        raise SpecError(where, f"must be a non-empty string, got {_show(uri)}")
    m = _URI_SCHEME.match(uri)
    if m is None:
        for scheme in ("pvc", "file"):  # 'pvc:claim/x' would otherwise pass as a relative path
            if uri.startswith(f"{scheme}:"):
                raise SpecError(where, f"malformed {scheme}:// URI {_show(uri)}: expected "
                                       f"{'pvc://CLAIM/path' if scheme == 'pvc' else 'file:///absolute/path'}")
        return
    scheme = m.group(1)
    if scheme == "pvc":
        claim, _, path = uri[len("pvc://"):].partition("/")
        if not _is_dns1123_label(claim):
            raise SpecError(where, f"malformed pvc:// URI {_show(uri)}: the claim name {_show(claim)} is not a DNS-1123 "
                                   "label (lowercase letters, digits and '-', at most 63); expected pvc://CLAIM/path")
        if ".." in PurePosixPath(unquote(path)).parts:
            raise SpecError(where, f"malformed pvc:// URI {_show(uri)}: '..' would leave the claim")
    elif scheme == "file":
        if not uri.startswith("file:///"):
            raise SpecError(where, f"malformed file:// URI {_show(uri)}: expected file:///absolute/path (three slashes)")
    else:
        raise SpecError(where, f"unsupported URI scheme '{scheme}://' in {_show(uri)}; use pvc://CLAIM/path, "
                               "file:///absolute/path or a plain path")


def local_path(uri: str, pvc_root: str | Path, base_dir: str | Path | None = None) -> Path:
    """Where `uri` lives on this machine, given that claim CLAIM is mounted at `pvc_root`/CLAIM
    (the operator mounts claims under /mnt/pvc; `kondense run` uses a directory the user names).

    pvc://CLAIM/x -> pvc_root/CLAIM/x; file:///x -> /x (percent-escapes decoded in both);
    a plain path is used as is, `~` expanded, a relative one taken against `base_dir` if given.
    """
    _check_uri(uri, "uri")
    if uri.startswith("pvc://"):
        claim, _, path = uri[len("pvc://"):].partition("/")
        return Path(pvc_root) / claim / unquote(path)
    if uri.startswith("file://"):
        return Path(unquote(uri[len("file://"):]))
    path = Path(uri).expanduser()
    if base_dir is not None and not path.is_absolute():
        return Path(base_dir) / path
    return path


def claims(spec: JobSpec) -> tuple[str, ...]:
    """The PersistentVolumeClaims the job reads or writes, sorted: the volumes its pods mount."""
    uris = (spec.model.uri, spec.data.uri, spec.output_uri)
    return tuple(sorted({u[len("pvc://"):].partition("/")[0] for u in uris if u and u.startswith("pvc://")}))


# ---------------------------------------------------------------------------------------------
# back to a manifest, and on to the engine


def to_manifest(job: CompressionJob) -> dict:
    """The camelCase manifest of `job`, defaults filled in: what `parse` accepts back unchanged.

    Budget fields left to the engine's defaults are left out (the defaults live in the engine).
    """
    s = job.spec
    model = {k: v for k, v in (("zoo", s.model.zoo), ("uri", s.model.uri), ("arch", s.model.arch)) if v is not None}
    data = {k: v for k, v in (("dataset", s.data.dataset), ("uri", s.data.uri), ("format", s.data.format)) if v is not None}
    budget = {}
    for key, attr in BUDGET_KEYS.items():
        v = getattr(s.budget, attr)
        if v is not None:
            budget[key] = list(v) if attr == "ratios" else v
    spec = {"model": model, "data": data, "delta": s.delta, "stage": s.stage, "workers": s.workers,
            "slotsPerWorker": s.slots_per_worker, "backend": s.backend, "device": s.device, "objective": s.objective,
            "output": {"uri": s.output_uri}, "suspend": s.suspend, "seed": s.seed, "budget": budget,
            "resources": _plain_copy(s.resources)}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": job.name, "namespace": job.namespace},
            "spec": spec}


def compress_kwargs(spec: JobSpec) -> dict:
    """Keyword arguments for kondense.compress besides model, data, out and budget."""
    b = spec.budget
    return {"delta": spec.delta, "stage": spec.stage, "objective": spec.objective, "device": spec.device,
            "seed": spec.seed, "train_samples": b.train_samples, "val_samples": b.val_samples,
            "test_samples": b.test_samples, "arch": spec.model.arch}


def budget_kwargs(spec: JobSpec) -> dict:
    """Keyword arguments for kondense.pipeline.context.Budget: only the fields the manifest gave, so the
    engine's defaults apply to the rest."""
    b = spec.budget
    out = {attr: getattr(b, attr) for attr in ("stage1_epochs", "step_epochs", "max_steps", "scan_samples", "ratios")}
    return {k: v for k, v in out.items() if v is not None}


def model_argument(spec: JobSpec, pvc_root: str | Path) -> str:
    """compress()'s `model`: 'zoo:ARCH', or the local path of the model's uri."""
    if spec.model.zoo is not None:
        return f"zoo:{spec.model.zoo}"
    return str(local_path(spec.model.uri, pvc_root))


def data_argument(spec: JobSpec, pvc_root: str | Path) -> str:
    """compress()'s `data`: the data set's name, or the local path of the data's uri."""
    if spec.data.dataset is not None:
        return spec.data.dataset
    return str(local_path(spec.data.uri, pvc_root))


# ---------------------------------------------------------------------------------------------
# helpers


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
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_keys(mapping: Mapping, known: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in known:
            field_ = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(field_, f"unknown field{hint}; known: {', '.join(known)}")


def _exactly_one(mapping: Mapping, keys: tuple[str, str], where: str) -> None:
    given = [k for k in keys if mapping.get(k) is not None]
    if len(given) != 1:
        what = "neither" if not given else "both"
        raise SpecError(where, f"give exactly one of {keys[0]} and {keys[1]}, got {what}")


def _need_mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        raise SpecError(where, f"must be a mapping, got {_kind_of(value)}")


def _optional(mapping: Mapping, key: str, default: Any) -> Any:
    value = mapping.get(key)
    return default if value is None else value


def _optional_string(mapping: Mapping, key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise SpecError(f"{where}.{key}", f"must be a non-empty string, got {_show(value)}")
    return value


def _positive_int(mapping: Mapping, key: str, default: int, where: str, unit: str) -> int:
    value = _optional(mapping, key, default)
    if not _is_int(value) or value < 1:
        raise SpecError(f"{where}.{key}", f"must be an integer >= 1 ({unit}), got {_show(value)}")
    return value


def _choice(mapping: Mapping, key: str, default: str, allowed: tuple[str, ...], where: str) -> str:
    value = _optional(mapping, key, default)
    if value not in allowed:
        raise SpecError(f"{where}.{key}", f"must be one of {', '.join(allowed)}, got {_show(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """int or float, but not bool (YAML's `yes` is True, and True == 1) and not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (isinstance(value, float) and math.isnan(value))


def _is_dns1123_label(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def _is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and all(_DNS1123_LABEL.fullmatch(part) for part in value.split("."))


def _plain_copy(value: Any) -> Any:
    """A deep copy as plain dicts and lists, so a job never shares mutable state with its input."""
    if isinstance(value, Mapping):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(v) for v in value]
    return value


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    return f"{type(value).__name__} {_show(value)}"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(error: yaml.YAMLError) -> str:
    """'line 3, column 5: found duplicate key 'delta'' rather than PyYAML's multi-line report,
    which quotes the source and calls the file "<unicode string>"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
