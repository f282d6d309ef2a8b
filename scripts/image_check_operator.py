#!/usr/bin/env python3
"""Smoke check of the operator image: the kmock API emulator runs here on 127.0.0.1 (as in
tests/operator/conftest.py), `kondense-operator` runs inside the image with a kubeconfig pointing
at it, a CompressionJob is created, and the check passes when the operator has created the job's
stage-1 Job with its built-in worker image. Otherwise it fails with the operator's log.

    .venv/bin/python scripts/image_check_operator.py IMAGE WORKER_IMAGE [--builder docker|buildah]

Run by scripts/image-check.sh (make image-check-operator); needs the test extra (kmock).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kondense_operator.children import child_name  # noqa: E402
from tests.operator.conftest import Api, ApiServer, cj_manifest, free_port, wait_for, write_kubeconfig  # noqa: E402

NAMESPACE, NAME = "image-check", "smoke"
KUBE_DIR = "/run/kondense-kube"  # where the kubeconfig is mounted inside the image


class OperatorInImage:
    """kondense-operator inside `image` as UID 1000 on the host's network, with docker or buildah."""

    def __init__(self, builder: str, image: str, kube_dir: Path, log_path: Path):
        self.builder, self.image, self.log_path = builder, image, log_path
        self.health_port = free_port()
        argv = [
            "kondense-operator",
            "--all-namespaces",
            "--verbose",
            "--health-port",
            str(self.health_port),
            "--metrics-port",
            str(free_port()),
        ]
        mount, env = ["-v", f"{kube_dir}:{KUBE_DIR}:ro"], ["-e", f"KUBECONFIG={KUBE_DIR}/config"]
        self.container = ""
        if builder == "docker":
            self.cmd = ["docker", "run", "--rm", "--network", "host", "--user", "1000:1000", *mount, *env, image, *argv]
        else:
            self.container = subprocess.run(
                ["buildah", "from", "--pull-never", image], check=True, capture_output=True, text=True
            ).stdout.strip()
            self.cmd = [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--user",
                "1000:1000",
                *mount,
                *env,
                self.container,
                "--",
                *argv,
            ]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float) -> None:
        """Until /healthz answers; fails at once if the operator exits (wait_for would wait on)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"the operator exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise CheckFailed(f"the operator's /healthz did not answer within {timeout:.0f} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no output)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.container:
            subprocess.run(["buildah", "rm", self.container], capture_output=True)


class CheckFailed(Exception):
    pass


def check(op: OperatorInImage, api: Api, worker_image: str) -> str:
    """The stage-1 Job's name once the operator has created it with `worker_image`."""
    op.start()
    op.wait_healthy(timeout=120)
    api.create_cj(NAMESPACE, cj_manifest(NAME, NAMESPACE))
    job = wait_for(lambda: api.get("Job", NAMESPACE, child_name(NAME, 1)), timeout=60, message="the stage-1 Job")
    images = [c["image"] for c in job["spec"]["template"]["spec"]["containers"]]
    if images != [worker_image]:
        raise CheckFailed(f"the stage-1 Job runs {images}, not the operator's default worker image {worker_image}")
    return job["metadata"]["name"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image", help="the operator image to check")
    p.add_argument("worker_image", help="the worker image the operator must put in its Jobs by default")
    p.add_argument("--builder", choices=["docker", "buildah"], default="buildah")
    args = p.parse_args(argv)

    server = ApiServer().start()
    with tempfile.TemporaryDirectory(prefix="image-check-") as tmp:
        kube_dir = Path(tmp) / "kube"
        kube_dir.mkdir()
        write_kubeconfig(kube_dir / "config", server.url, token="operator-token")
        os.chmod(tmp, 0o755)  # UID 1000 inside reads the kubeconfig
        os.chmod(kube_dir, 0o755)
        os.chmod(kube_dir / "config", 0o644)
        op = OperatorInImage(args.builder, args.image, kube_dir, Path(tmp) / "operator.log")
        try:
            name = check(op, Api(kube_dir / "config"), args.worker_image)
        except (CheckFailed, AssertionError) as e:
            print(f"image-check: FAILED: {args.image}: {e}\n--- the operator's log:\n{op.log()}", file=sys.stderr)
            return 1
        finally:
            op.stop()
            server.stop()
    print(f"image-check: {args.image}: OK (the operator created Job {NAMESPACE}/{name} running {args.worker_image})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
