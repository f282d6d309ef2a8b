"""Standby replicas (--peering, the chart's operator.replicas above 1): two real operator processes
on one API server, peering through kopf's ClusterKopfPeering. Only one acts on a CompressionJob;
the other says it paused. Killed without a goodbye (SIGKILL), the active one's keep-alive runs out
after --peering-lifetime and the standby takes over."""

from __future__ import annotations

import signal
import time

import pytest

from kondense_operator import children, rbac
from kondense_operator.cli import parse_config

from .conftest import PATIENCE, OperatorProcess, cj_manifest, wait_for
from .test_operator import _rbac_request

pytestmark = pytest.mark.timeout(400)
PEERING = "kondense"
LIFETIME = 10  # seconds a keep-alive counts: how long a standby waits for a dead peer
NS = "peers"
RESUMED = "Resuming operations after the pause"  # kopf's peering line when an operator acts
PAUSED = "Pausing the watch-stream for compressionjobs"


def _writes(apiserver, op: OperatorProcess) -> list[tuple[str, str]]:
    """What `op` changed besides the peering object: creates, patches, deletes."""
    return [
        (m, p)
        for token, m, p in list(apiserver.emulator.log)
        if token == op.token and m in ("POST", "PATCH", "PUT", "DELETE") and "/kopf.dev/" not in p
    ]


def _stage_jobs(api, name: str) -> list[dict]:
    return [j for j in api.list("Job", NS) if j["metadata"]["name"] == children.child_name(name, 1)]


def test_one_acts_the_standby_takes_over(apiserver, api, kubeconfig, tmp_path):
    # no peering object yet: the operator creates it (the second gets a 409, which is fine)
    args = ["--all-namespaces", "--peering", PEERING, "--peering-lifetime", str(LIFETIME)]
    first = OperatorProcess(kubeconfig, tmp_path / "first.log", args, token="first-token").start()
    # kopf starts a peering operator paused and resumes it once its peering object shows no live
    # peer of higher priority
    wait_for(lambda: RESUMED in first.log(), PATIENCE, message="the first operator active")
    time.sleep(1)  # distinct start times: the first is the older, the one that acts
    second = OperatorProcess(kubeconfig, tmp_path / "second.log", args, token="second-token").start()
    try:
        # the standby starts paused, as every peering operator does, and stays so: kopf says
        # "Pausing operations in favour of ..." only when an active operator yields, not here
        wait_for(lambda: PAUSED in second.log(), PATIENCE, message="the standby's watches paused")

        api.create_cj(NS, cj_manifest("one", NS))
        wait_for(lambda: _stage_jobs(api, "one"), PATIENCE, message="the stage Job")
        wait_for(lambda: (api.get_cj(NS, "one").get("status") or {}).get("phase"), PATIENCE)
        time.sleep(5)  # were the standby acting too, it would have written by now
        assert RESUMED not in second.log(), "the standby resumed beside a live active operator"
        assert len(_stage_jobs(api, "one")) == 1
        assert _writes(apiserver, first), "the active operator wrote nothing?"
        assert _writes(apiserver, second) == [], "the standby acted"
        events = [e for e in api.list("Event", NS) if e["involvedObject"]["name"] == "one"]
        assert events and len({(e["reason"], e["message"]) for e in events}) == len(events), "Events twice"

        first.stop(signal.SIGKILL)  # no goodbye: its keep-alive has to run out
        killed = time.monotonic()
        wait_for(lambda: RESUMED in second.log(), LIFETIME + PATIENCE, message="the standby resumed")
        assert time.monotonic() - killed < LIFETIME + PATIENCE
        api.create_cj(NS, cj_manifest("two", NS))
        wait_for(lambda: _stage_jobs(api, "two"), PATIENCE, message="the former standby handled a new job")
        assert any(p.endswith("/jobs") for m, p in _writes(apiserver, second) if m == "POST")
    finally:
        second.stop()
        first.stop()

    # the peering rights: every request on kopf.dev resources allowed by the cluster peering rules
    # (--all-namespaces), and every granted verb used
    used = set()
    for token, method, path in list(apiserver.emulator.log):
        if token in (first.token, second.token) and path.startswith("/apis/kopf.dev/"):
            group, resource, verb = _rbac_request(method, path)
            if resource is not None:  # discovery (/apis/kopf.dev/v1) needs no rule
                used.add((group, resource, verb))
    granted = {
        (g, r, v)
        for rule in rbac.peering_rules(clusterwide=True)
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert used == granted
    assert api.raw.request("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{PEERING}")["metadata"]["name"] == PEERING


def test_peering_options():
    config = parse_config([])[0]
    assert config.peering is None and config.peering_lifetime_s == 60
    config = parse_config(["--peering", "p", "--peering-lifetime", "15"])[0]
    assert config.peering == "p" and config.peering_lifetime_s == 15
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit):
            parse_config(["--peering", "p", "--peering-lifetime", bad])
