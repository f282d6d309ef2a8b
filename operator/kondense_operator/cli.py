"""`kondense-operator`: the command line the Helm chart runs.

    kondense-operator [--namespace NS]... | [--all-namespaces]
                      [--metrics-port 9090] [--health-port 8080]
                      [--worker-config PATH] [--worker-image IMAGE]
                      [--forbidden-retry-seconds 300] [--recheck-seconds 30]
                      [--peering NAME [--peering-lifetime 60]]

Environment alternatives: KONDENSE_WATCH_NAMESPACES (comma-separated), KONDENSE_WORKER_CONFIG,
KONDENSE_WORKER_IMAGE, KONDENSE_PEERING, KONDENSE_PEERING_LIFETIME; flags win. Without --peering
kopf runs standalone (no peering objects): the only operator of its scope. With --peering NAME it
keeps alive in kopf's peering object NAME (a ClusterKopfPeering with --all-namespaces, a
KopfPeering in each watched namespace otherwise) and only the oldest live process acts, the others
stand by (handlers.startup). CRD and namespace scanning are off either way, so the operator needs
only the rights listed in rbac.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import (
    DEFAULT_FORBIDDEN_RETRY_S,
    DEFAULT_HEALTH_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_PEERING_LIFETIME_S,
    DEFAULT_RECHECK_S,
    KEYS,
    ConfigError,
    OperatorConfig,
    WorkerConfig,
    load_worker_config,
    namespaces_from_env,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kondense-operator",
        description="Runs kondense CompressionJobs as Indexed Jobs of `kondense worker` pods "
        "(backend mpi: as Kubeflow MPIJobs, where the worker config's mpiJob.enabled says so).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all (or $KONDENSE_WATCH_NAMESPACES)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=DEFAULT_METRICS_PORT,
        help=f"Prometheus /metrics port; 0 = off (default {DEFAULT_METRICS_PORT})",
    )
    p.add_argument(
        "--health-port",
        type=_port,
        default=DEFAULT_HEALTH_PORT,
        help=f"liveness endpoint http://0.0.0.0:PORT/healthz; 0 = off (default {DEFAULT_HEALTH_PORT})",
    )
    p.add_argument(
        "--worker-config",
        default=os.environ.get("KONDENSE_WORKER_CONFIG") or None,
        metavar="PATH",
        help=f"YAML with the worker pods' {', '.join(KEYS)} (default $KONDENSE_WORKER_CONFIG)",
    )
    p.add_argument(
        "--worker-image",
        default=os.environ.get("KONDENSE_WORKER_IMAGE") or None,
        metavar="IMAGE",
        help=f"the worker image, over the config's (default $KONDENSE_WORKER_IMAGE, else {WorkerConfig().image})",
    )
    p.add_argument(
        "--forbidden-retry-seconds",
        type=_seconds,
        default=DEFAULT_FORBIDDEN_RETRY_S,
        metavar="S",
        help=f"how long a job refused a right (403) waits before its next try (default {DEFAULT_FORBIDDEN_RETRY_S:g})",
    )
    p.add_argument(
        "--recheck-seconds",
        type=_seconds,
        default=DEFAULT_RECHECK_S,
        metavar="S",
        help="how often every unfinished CompressionJob is looked at again, whatever the watch events "
        f"said: a missed event delays a job by at most this (default {DEFAULT_RECHECK_S:g})",
    )
    p.add_argument(
        "--peering",
        default=os.environ.get("KONDENSE_PEERING") or None,
        metavar="NAME",
        help="run as one of several replicas peering in kopf's peering object NAME (which must exist: "
        "ClusterKopfPeering with --all-namespaces, else a KopfPeering in every watched namespace); one acts, "
        "the others stand by (default $KONDENSE_PEERING, else standalone: the only operator)",
    )
    p.add_argument(
        "--peering-lifetime",
        type=_whole_seconds,
        default=os.environ.get("KONDENSE_PEERING_LIFETIME") or DEFAULT_PEERING_LIFETIME_S,
        metavar="S",
        help="how long a peer's keep-alive counts: a standby takes over at most this long after the active "
        f"operator died unannounced (default $KONDENSE_PEERING_LIFETIME, else {DEFAULT_PEERING_LIFETIME_S})",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def _whole_seconds(text: str) -> int:
    # kopf keeps a peer's lifetime as whole seconds (peering.Peer)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def parse_config(argv: list[str] | None = None) -> tuple[OperatorConfig, argparse.Namespace]:
    """The OperatorConfig that argv (and the environment) describe; exits on a bad setting."""
    parser = build_parser()
    args = parser.parse_args(argv)
    namespaces = () if args.all_namespaces else tuple(dict.fromkeys(args.namespace)) or namespaces_from_env()
    try:
        worker = load_worker_config(args.worker_config, args.worker_image)
    except ConfigError as e:
        parser.exit(2, f"kondense-operator: {e}\n")
    return OperatorConfig(
        namespaces=namespaces,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        worker=worker,
        forbidden_retry_s=args.forbidden_retry_seconds,
        recheck_s=args.recheck_seconds,
        peering=args.peering,
        peering_lifetime_s=args.peering_lifetime,
    ), args


def main(argv: list[str] | None = None) -> None:
    config, args = parse_config(argv)

    import kopf

    # kopf's formatter puts "[namespace/name]" before every line its per-object loggers write
    # (handler outcomes, retries, errors); a plain logging.basicConfig would drop it
    kopf.configure(verbose=args.verbose, log_format=LOG_FORMAT, log_prefix=True)  # type: ignore[arg-type]
    # the CRD's CEL rules run through celpy on every pass; its DEBUG lines (whole parse trees)
    # would drown the operator's own under --verbose
    logging.getLogger("celpy").setLevel(logging.WARNING)

    from . import handlers, metrics  # noqa: F401  (importing registers the handlers)

    handlers.recheck_every(config.recheck_s)
    if config.worker.mpi_enabled:
        handlers.watch_mpijobs()
    metrics.serve(config.metrics_port)
    memo = kopf.Memo(config=config)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    # the peering settings proper (name, priority, lifetime) are set in handlers.startup, which runs
    # before kopf starts its watches and its peering
    kopf.run(
        standalone=config.peering is None,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=liveness,
        memo=memo,
    )


if __name__ == "__main__":
    sys.exit(main())
