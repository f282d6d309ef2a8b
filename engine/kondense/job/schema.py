"""The CompressionJob CRD as the validator of manifests, the way the API server uses it.

The CRD (compressionjob.crd.yaml, package data) is the one declaration of what a manifest may
hold. `validate` does what the API server does on create, in its order:
  1. nulls are pruned (a field set to null counts as absent) and `default:` values applied;
     what JSON cannot carry (NaN, infinities, non-string keys) is refused: YAML can write it,
     kubectl cannot send it, so no schema speaks of it;
  2. the openAPIV3Schema is checked with jsonschema (OpenAPI v3.0 is JSON Schema draft 4 here:
     boolean exclusiveMinimum/exclusiveMaximum), unknown fields refused wherever the schema lists
     properties (kubectl's strict field validation) unless x-kubernetes-preserve-unknown-fields;
  3. the x-kubernetes-validations CEL rules run with cel-python (RE2 regular expressions, as on
     the API server); transition rules, those naming oldSelf, only apply to updates and are skipped.
     With kubernetes=False (`kondense run`, one machine) the rules that hold only on Kubernetes,
     those whose message starts with KUBERNETES_ONLY, are skipped too.
The first problem wins: schema errors ordered by field (parents first, then the schema's field
order), then CEL rules in the same order. Torch-free, like all of kondense.job.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

from kondense.errors import KondenseError

CRD_FILE = Path(__file__).with_name("compressionjob.crd.yaml")
# How a rule of the CRD says it holds on Kubernetes only: its message starts so (a rule may carry
# nothing but rule, message and fieldPath, and the message is what the user reads anyway).
KUBERNETES_ONLY = "on Kubernetes"

_TYPE_NAMES = {
    "object": "a mapping",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
}
# at one field: what the value is, then which keys it has, then everything else
_RANK = {"type": 0, "additionalProperties": 1, "required": 2, "oneOf": 3, "anyOf": 3}


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


@functools.cache
def crd() -> dict:
    """The CustomResourceDefinition, parsed once (callers must not modify it)."""
    # libyaml's loader where PyYAML has it: the pure-Python one takes a noticeable part of an import
    return yaml.load(CRD_FILE.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def root_schema() -> dict:
    """The openAPIV3Schema of the served version: the whole object, metadata and status included."""
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def spec_schema() -> dict:
    return root_schema()["properties"]["spec"]


def defaults(schema: Mapping | None = None) -> dict[str, Any]:
    """The `default:` values of an object schema's properties (of `spec` unless told)."""
    schema = spec_schema() if schema is None else schema
    return {key: sub["default"] for key, sub in schema["properties"].items() if "default" in sub}


def validate(value: Any, schema: Mapping | None = None, where: str = "", *, kubernetes: bool = True) -> Any:
    """`value` pruned of nulls and defaulted, if `schema` (the whole object's unless told) accepts
    it on create; else SpecError for the first problem, its field prefixed with `where`.
    kubernetes=False judges a local run: the rules marked KUBERNETES_ONLY are skipped."""
    schema = root_schema() if schema is None else schema
    value = _defaulted(_pruned(value), schema)
    _check_json(value, where)
    errors = list(_validator(schema).iter_errors(value))
    if errors:
        first = min(
            errors, key=lambda e: (_order(value, schema, list(e.absolute_path)), _RANK.get(e.validator, 4), e.message)
        )
        raise _problem(first, _join(where, *first.absolute_path))
    for problem in _rule_problems(value, schema, where, kubernetes):
        raise problem
    return value


# ---------------------------------------------------------------------------------------------
# as the API server prepares an object


def _pruned(value: Any) -> Any:
    """A copy without null map values: the API server drops them before defaulting (no field of
    the CRD is nullable), so `stage: null` means the default and `delta: null` a missing delta."""
    if isinstance(value, Mapping):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_pruned(v) for v in value]
    return value


def _defaulted(value: Any, schema: Mapping) -> Any:
    """Fills in `default:` values in place, at every level the value has (a default under an
    absent object does not create it)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = _pruned(sub["default"])
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties"))
            if isinstance(sub, Mapping):
                _defaulted(item, sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _defaulted(item, schema["items"])
    return value


def _check_json(value: Any, where: str) -> None:
    """What YAML can say but JSON, and so the API server, cannot: NaN, infinities, non-string keys."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(where, f"must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(_join(where, str(key)), f"field names must be strings, got {show(key)}")
            _check_json(item, _join(where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")


# ---------------------------------------------------------------------------------------------
# the openAPIV3Schema


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists properties (kubectl's strict field
    validation), except under x-kubernetes-preserve-unknown-fields. A property-less object takes
    anything: the only one outside status is metadata, Kubernetes' own (kondense.job.spec reads
    its name and namespace)."""
    if isinstance(schema, Mapping):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


# id(schema) -> (schema, its validator); holding the schema keeps its id from being reused
_validators: dict[int, tuple[Mapping, jsonschema.Draft4Validator]] = {}


def _validator(schema: Mapping) -> jsonschema.Draft4Validator:
    if id(schema) not in _validators:
        _validators[id(schema)] = (schema, jsonschema.Draft4Validator(_strict(schema)))
    return _validators[id(schema)][1]


def _order(value: Any, schema: Mapping, path: list) -> tuple[int, ...]:
    """Where a field comes in the document: a key by its place among the schema's properties
    (a map's keys by their place in the value), an item by its index."""
    out = []
    for step in path:
        properties = schema.get("properties") or {}
        if isinstance(step, int):
            out.append(step)
            schema = schema.get("items") or {}
        elif step in properties:
            out.append(list(properties).index(step))
            schema = properties[step]
        else:
            out.append(len(properties) + list(value).index(step))
            schema = schema.get("additionalProperties") or {}
        value = value[step]
    return tuple(out)


def _problem(error: jsonschema.ValidationError, field: str) -> SpecError:
    kind, schema, instance = error.validator, error.schema, error.instance
    if kind == "required":
        missing = next(k for k in error.validator_value if k not in instance)
        sub = schema.get("properties", {}).get(missing, {})
        return SpecError(_join(field, missing), _explained("missing", sub))
    if kind == "additionalProperties":
        known = list(schema.get("properties") or ())
        unknown = next(str(k) for k in instance if k not in known)
        close = difflib.get_close_matches(unknown, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return SpecError(_join(field, unknown), f"unknown field{hint}; known: {', '.join(known)}")
    if kind == "oneOf":
        keys = [branch["required"][0] for branch in error.validator_value]
        given = [k for k in keys if k in instance]
        return SpecError(
            field, _explained(f"give exactly one of {' and '.join(keys)}, got {'both' if given else 'neither'}", schema)
        )
    if kind == "anyOf":
        types = " or ".join(_TYPE_NAMES[branch["type"]] for branch in error.validator_value)
        return SpecError(field, _explained(f"must be {types}, got {kind_of(instance)}", schema))
    if kind == "type":
        return SpecError(field, _explained(f"must be {_TYPE_NAMES[schema['type']]}, got {kind_of(instance)}", schema))
    if kind == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        close = difflib.get_close_matches(str(instance), list(map(str, error.validator_value)), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return SpecError(field, _explained(f"must be one of {allowed}, got {show(instance)}{hint}", schema))
    if kind in ("minimum", "maximum"):
        # an int-or-string (a quantity) has no type of its own
        what = f"{_TYPE_NAMES[schema['type']]} " if "type" in schema else ""
        return SpecError(field, _explained(f"must be {what}{_bounds(schema)}, got {show(instance)}", schema))
    if kind in ("minLength", "maxLength", "minItems", "maxItems", "maxProperties"):
        unit = "characters" if kind.endswith("Length") else "entries"
        return SpecError(
            field, _explained(f"must have {_size_bounds(schema, kind)} {unit}, got {len(instance)}", schema)
        )
    if kind == "pattern":
        return SpecError(field, _explained(f"{show(instance)} is not allowed", schema))
    return SpecError(field, _explained(error.message, schema))


def _bounds(schema: Mapping) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return (
            f"in {'(' if schema.get('exclusiveMinimum') else '['}{low}, "
            f"{high}{')' if schema.get('exclusiveMaximum') else ']'}"
        )
    if low is not None:
        return f"{'>' if schema.get('exclusiveMinimum') else '>='} {low}"
    return f"{'<' if schema.get('exclusiveMaximum') else '<='} {high}"


def _size_bounds(schema: Mapping, kind: str) -> str:
    what = "Length" if kind.endswith("Length") else ("Items" if kind.endswith("Items") else "Properties")
    low, high = schema.get(f"min{what}"), schema.get(f"max{what}")
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _explained(problem: str, schema: Mapping) -> str:
    description = (schema.get("description") or "").strip()
    if not description:
        return problem
    return f"{problem}. {description}" + ("" if description.endswith(".") else ".")


# ---------------------------------------------------------------------------------------------
# x-kubernetes-validations


@functools.cache
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _rule_problems(value: Any, schema: Mapping, where: str, kubernetes: bool) -> Iterator[SpecError]:
    """The failing rules on create, parents before children, in the schema's field order."""
    for rule in schema.get("x-kubernetes-validations") or ():
        if "oldSelf" in rule["rule"] or (not kubernetes and is_kubernetes_only(rule)):
            continue
        if not _holds(rule["rule"], value):
            yield SpecError(where + rule.get("fieldPath", ""), rule.get("message") or f"must satisfy {rule['rule']}")
    if isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        keys = [k for k in properties if k in value] + [k for k in value if k not in properties]
        for key in keys:
            sub = properties.get(key, schema.get("additionalProperties"))
            if isinstance(sub, Mapping):
                yield from _rule_problems(value[key], sub, _join(where, key), kubernetes)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            yield from _rule_problems(item, schema["items"], f"{where}[{i}]", kubernetes)


def is_kubernetes_only(rule: Mapping) -> bool:
    """Whether an x-kubernetes-validations rule holds only on Kubernetes (see KUBERNETES_ONLY)."""
    return str(rule.get("message") or "").startswith(KUBERNETES_ONLY)


def _holds(rule: str, value: Any) -> bool:
    """A rule that cannot be evaluated (a runtime error) fails, as on the API server."""
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


# ---------------------------------------------------------------------------------------------
# showing values


def _join(where: str, *path: Any) -> str:
    out = where
    for step in path:
        out = f"{out}[{step}]" if isinstance(step, int) else (f"{out}.{step}" if out else str(step))
    return out


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the string {show(value)}"
    return f"{type(value).__name__} {show(value)}"


def show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."
