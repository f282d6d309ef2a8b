"""URIs of models, data and outputs, and where they live on this machine.

    pvc://CLAIM/path   a path inside PersistentVolumeClaim CLAIM (mounted at PVC_ROOT/CLAIM)
    file:///abs/path   an absolute local path
    path               a plain local path; relative ones are taken against a base directory

What a valid URI is, the CRD says (the rules on spec.output.uri, shared by every URI field).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from kondense.job import schema

PVC = "pvc://"
FILE = "file://"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def check(uri: str, where: str = "uri") -> None:
    """SpecError unless the CRD accepts `uri` as a URI field."""
    schema.validate(uri, schema.spec_schema()["properties"]["output"]["properties"]["uri"], where)


def is_plain_path(uri: str) -> bool:
    return _SCHEME.match(uri) is None


def absolute(uri: str, base_dir: str | Path) -> str:
    """`uri` with a relative plain path made absolute against `base_dir` (`~` expanded first);
    URIs and absolute paths as written."""
    if not is_plain_path(uri):
        return uri
    path = Path(uri).expanduser()
    if path.is_absolute():
        return uri
    return os.path.normpath(Path(base_dir).expanduser().absolute() / path)


def claim(uri: str | None) -> str | None:
    """The claim a pvc:// URI names; None for anything else."""
    if not uri or not uri.startswith(PVC):
        return None
    return uri[len(PVC) :].partition("/")[0]


def local_path(uri: str, pvc_root: str | Path, base_dir: str | Path | None = None) -> Path:
    """Where `uri` lives on this machine, given that claim CLAIM is mounted at `pvc_root`/CLAIM
    (the operator mounts claims under /mnt/pvc; `kondense run` uses a directory the user names).

    pvc://CLAIM/x -> pvc_root/CLAIM/x; file:///x -> /x (percent-escapes decoded in both);
    a plain path is used as is, `~` expanded, a relative one taken against `base_dir` if given.
    """
    check(uri)
    if uri.startswith(PVC):
        name, _, path = uri[len(PVC) :].partition("/")
        return Path(pvc_root) / name / unquote(path)
    if uri.startswith(FILE):
        return Path(unquote(uri[len(FILE) :]))
    path = Path(uri).expanduser()
    if base_dir is not None and not path.is_absolute():
        return Path(base_dir) / path
    return path
