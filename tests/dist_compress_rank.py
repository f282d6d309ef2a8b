"""One rank of a distributed compression of the tiny CNN (started by kondense.launch.worker).

    python tests/dist_compress_rank.py OUT [STAGE]

KONDENSE_TEST_DEVICE picks the device (default cpu; cuda: this rank's GPU, NCCL between ranks).

Every rank writes what it decided to OUT/rank-R.json, and its pid to OUT/pid-R, so tests
can compare ranks and kill one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kondense  # noqa: E402
from kondense import distributed, logs  # noqa: E402
from kondense.pipeline.budget import Budget  # noqa: E402
from kondense.pipeline.distill import FineTune  # noqa: E402
from tests.tinynet import small_data, trained_tiny  # noqa: E402

BUDGET = dict(ratios=(0.5, 0.25), stage1_epochs=2, step_epochs=1, max_steps=2, scan_samples=300, recal_samples=256)


def main(out: str, stage: int = 2) -> None:
    # The batch is per rank: 64 // size keeps the global batch, and so the number and size of the
    # optimizer steps, equal to the one-process run's, which the tests compare this run with.
    logs.setup()  # rank 0's progress lines reach the launcher (tests look for "resumed from checkpoint")
    device = os.environ.get("KONDENSE_TEST_DEVICE", "cpu")
    comm = distributed.init(os.environ.get("KONDENSE_BACKEND", distributed.SINGLE), device=device)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"pid-{comm.rank}").write_text(str(os.getpid()))
    bundle = small_data()
    result = kondense.compress(
        trained_tiny(bundle),
        bundle,
        delta=3.0,
        stage=stage,
        out=out,
        device=device,
        budget=Budget(**BUDGET),
        finetune=FineTune(batch_size=64 // comm.size),
        comm=comm,
    )
    (Path(out) / f"rank-{comm.rank}.json").write_text(
        json.dumps(
            {
                "rank": comm.rank,
                "size": comm.size,
                "steps": result.plan.to_dict()["steps"],
                "report": result.report,
                "params": sum(p.numel() for p in result.model.parameters()),
                "checksum": float(sum(p.detach().double().sum() for p in result.model.parameters())),
            }
        )
    )
    comm.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
