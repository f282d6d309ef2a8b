"""One image reference per image everywhere: the chart's rendered objects, deploy/, examples/ and
the operator's built-in worker image all name ghcr.io/kondense/kondense-operator or
ghcr.io/kondense/kondense-worker at the chart's appVersion (what the release workflow pushes), and a
digest set in the values renders as repository@digest."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.chart_util import CHART, DEPLOY, EXAMPLES, ROOT, load_all, render, template

REGISTRY = "ghcr.io/kondense"
OPERATOR_REPO = f"{REGISTRY}/kondense-operator"
WORKER_REPO = f"{REGISTRY}/kondense-worker"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
OPERATOR_IMAGE = f"{OPERATOR_REPO}:{APP_VERSION}"
WORKER_IMAGE = f"{WORKER_REPO}:{APP_VERSION}"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def images(node: object) -> Iterator[str]:
    """Every string under an `image` key, at any depth; YAML held in a ConfigMap's data (the
    worker config) is read too."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
        if node.get("kind") == "ConfigMap":
            for text in (node.get("data") or {}).values():
                yield from images(yaml.safe_load(text))
    elif isinstance(node, list):
        for item in node:
            yield from images(item)


def by_name(objects: list[dict]) -> dict[str, list[str]]:
    return {f"{o['kind']}/{o['metadata']['name']}": list(images(o)) for o in objects}


def test_release_version_is_the_chart_appversion():
    """The chart's version and appVersion move together: the release workflow checks both against the tag."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"], "Chart.yaml: version and appVersion must be equal (one release)"
    assert re.fullmatch(r"\d+\.\d+\.\d+", APP_VERSION), f"Chart.yaml appVersion {APP_VERSION!r} is not X.Y.Z"


@pytest.mark.parametrize("scope", ["all", "namespace"])
def test_rendered_chart_names_the_two_images(scope):
    found = by_name(render("--set", f"watch.scope={scope}"))
    assert found["Deployment/kondense"] == [OPERATOR_IMAGE]
    assert found["ConfigMap/kondense-worker-config"] == [WORKER_IMAGE]
    others = {name for name, refs in found.items() if refs} - {
        "Deployment/kondense",
        "ConfigMap/kondense-worker-config",
    }
    assert not others, f"image references the test does not know of: {sorted(others)}"


def test_deploy_names_the_two_images():
    found = {
        f"{p.name}: {ref}" for p in sorted(DEPLOY.glob("*.yaml")) for o in load_all(p.read_text()) for ref in images(o)
    }
    assert found == {f"deployment.yaml: {OPERATOR_IMAGE}", f"worker-config.yaml: {WORKER_IMAGE}"}, (
        "deploy/ is stale: run make deploy-manifests"
    )


def _example_refs(path: Path) -> Iterator[str]:
    for doc in load_all(path.read_text()):
        yield from images(doc)
        # an Argo CD Application carries the chart's values: its image repositories count too
        values = ((doc.get("spec") or {}).get("source") or {}).get("helm", {}).get("valuesObject") or {}
        for part, repo in (
            ((values.get("operator") or {}).get("image") or {}, OPERATOR_REPO),
            ((values.get("workers") or {}).get("image") or {}, WORKER_REPO),
        ):
            if "repository" in part:
                assert part["repository"] == repo, f"{path.name}: {part['repository']} is not {repo}"
                yield f"{repo}:{part.get('tag') or APP_VERSION}"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_name_the_two_images(path):
    bad = [ref for ref in _example_refs(path) if ref not in (OPERATOR_IMAGE, WORKER_IMAGE)]
    assert not bad, f"{path.name}: {bad} should be {OPERATOR_IMAGE} or {WORKER_IMAGE}"


def test_operator_default_worker_image():
    from kondense_operator.config import WorkerConfig

    schema = json.loads((ROOT / "operator" / "kondense_operator" / "worker-config.schema.json").read_text())
    assert schema["properties"]["image"]["default"] == WORKER_IMAGE
    assert WorkerConfig().image == WORKER_IMAGE


def test_digests_render_as_repository_at_digest():
    found = by_name(
        render(
            "--set",
            f"operator.image.digest={DIGEST}",
            "--set",
            f"workers.image.digest={DIGEST}",
            "--set",
            "operator.image.tag=9.9.9",
        )
    )
    assert found["Deployment/kondense"] == [f"{OPERATOR_REPO}@{DIGEST}"]
    assert found["ConfigMap/kondense-worker-config"] == [f"{WORKER_REPO}@{DIGEST}"]


def test_worker_digest_alone_keeps_the_operator_tag():
    found = by_name(
        render("--set", f"workers.image.digest={DIGEST}", "--set", "workers.image.repository=reg.example/w")
    )
    assert found["Deployment/kondense"] == [OPERATOR_IMAGE]
    assert found["ConfigMap/kondense-worker-config"] == [f"reg.example/w@{DIGEST}"]


@pytest.mark.parametrize(
    "value, field",
    [
        ("operator.image.digest=sha256:abc", "/operator/image/digest"),
        ("workers.image.digest=latest", "/workers/image/digest"),
        (f"operator.image.tag={DIGEST}", "/operator/image/tag"),  # a digest belongs in image.digest
        ("workers.image.repository=", "/workers/image/repository"),
    ],
)
def test_bad_image_values_fail_with_the_field(value, field):
    result = template("--set", value, check=False)
    assert result.returncode != 0, f"helm template accepted {value}"
    assert field in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# how the images are built, by reading (make image-check builds and runs them)


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's stages by name: their instructions, one a line, comments dropped."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            current = stages.setdefault(line.split(" AS ")[-1], [line])
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


def test_dockerfile_targets():
    stages = dockerfile_stages()
    assert stages["base"][0] == "FROM ${PYTHON_IMAGE} AS base"
    assert f"ARG VERSION={APP_VERSION}" in stages["base"], "the images' version label defaults to the appVersion"
    assert list(stages)[-1] == "worker", "the worker is the default target (the last stage)"
    for target in ("operator", "worker"):
        assert stages[target][0] == "FROM base AS " + target
        assert "USER 1000:1000" in stages[target], f"the {target} image must run as UID 1000, as the chart's pods do"
    operator = "\n".join(stages["operator"] + stages["operator-build"])
    assert "pip install --no-deps ." in operator and "torch" not in operator.replace("import torch", "")
    worker = "\n".join(stages["worker"] + stages["worker-build"])
    assert "scripts/build-horovod.sh /opt/kondense" in worker and "dataset-fashion-mnist" in worker
    assert "ARG CUDA_VERSION=13-0" in stages["worker-build"], "releases build Horovod with CUDA by default"


def test_what_the_images_copy_is_in_the_build_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "out", ".git"} <= ignored
    sources = [
        word
        for lines in dockerfile_stages().values()
        for line in lines
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not ignored & set(Path(source).parts), f"the Dockerfile copies {source}, which .dockerignore leaves out"


def test_make_image_targets_use_the_scripts():
    lines = (ROOT / "Makefile").read_text().splitlines()
    for target, command in [
        ("image", "scripts/build-image.sh all"),
        ("image-operator", "scripts/build-image.sh operator"),
        ("image-worker", "scripts/build-image.sh worker"),
        ("image-check", "scripts/image-check.sh all"),
        ("image-check-operator", "scripts/image-check.sh operator"),
        ("image-check-worker", "scripts/image-check.sh worker"),
    ]:
        i = next((i for i, line in enumerate(lines) if line.startswith(target + ":")), None)
        assert i is not None, f"the Makefile has no {target} target"
        assert lines[i + 1].strip() == command, f"make {target} should run {command}"
    for script in ("build-image.sh", "image-check.sh", "image_check_operator.py", "operator-requirements.py"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111, f"scripts/{script} is not executable"
    text = (ROOT / "scripts" / "image-env.sh").read_text()
    assert f"KONDENSE_REGISTRY:-{REGISTRY}}}" in text, f"scripts/image-env.sh must name the images {REGISTRY}/..."


def test_worker_image_carries_the_mpi_path():
    """Backend mpi (one Kubeflow MPIJob per stage): Open MPI, mpi4py and ssh in the worker image,
    and an sshd set up as the operator starts it in the MPIJob's worker pods (UID 1000, the port
    and config file kondense_operator.mpijob names); scripts/ssh/check.sh runs that path in the
    built image (make image-check-worker)."""
    from kondense_operator import mpijob

    stages = dockerfile_stages()
    worker = "\n".join(stages["worker"])
    for package in ("openmpi-bin", "openssh-client", "openssh-server"):
        assert package in worker, f"the worker image lacks {package}"
    assert 'pip install ".[mpi]"' in "\n".join(stages["worker-build"]), "mpi4py comes with the mpi extra"
    assert f"COPY scripts/ssh/sshd_config {mpijob.SSHD_CONFIG}" in stages["worker"]
    assert "COPY scripts/ssh/ssh_config /etc/ssh/ssh_config.d/kondense.conf" in stages["worker"]
    assert "rm -f /etc/ssh/ssh_host_*" in worker, "no host keys shared by every image"
    assert "usermod --shell /bin/sh --password '*' kondense" in worker, "sshd needs a login shell, no locked account"
    sshd = {
        line.split()[0]: line.split(None, 1)[1]
        for line in (ROOT / "scripts" / "ssh" / "sshd_config").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert sshd["Port"] == str(mpijob.SSH_PORT) and mpijob.SSH_PORT > 1024  # no capability to bind below
    assert sshd["PidFile"].startswith("/tmp/")  # the only writable place on a read-only root file system
    assert sshd["UsePAM"] == "no" and sshd["PasswordAuthentication"] == "no" and sshd["StrictModes"] == "no"
    assert "HostKey" not in sshd, "the host key is the job's own, given by the operator (-h)"
    client = (ROOT / "scripts" / "ssh" / "ssh_config").read_text()
    assert f"Port {mpijob.SSH_PORT}" in client and "UserKnownHostsFile /dev/null" in client
    # the operator's pods: sshd in the workers, the image's home as where the MPI operator mounts the keys
    from kondense_operator.config import WorkerConfig

    assert WorkerConfig().mpi_job["sshAuthMountPath"] == "/home/kondense/.ssh"
    assert "--home-dir /home/kondense" in "\n".join(stages["base"])
    assert 'in_image "$image" sh -c "$(cat scripts/ssh/check.sh)"' in (ROOT / "scripts" / "image-check.sh").read_text()
