"""One rank of the throughput benchmark: distillation fine-tuning of an arch on Fashion-MNIST.

Started by benchmarks/throughput.py through kondense.launch.worker; rank 0 writes one JSON object to OUT.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from kondense import data, distributed, zoo
from kondense.files import save_json
from kondense.pipeline.distill import FineTune, cache_teacher


def main(arch: str, samples: int, device: str, out: str) -> None:
    comm = distributed.init(os.environ.get("KONDENSE_BACKEND", distributed.SINGLE), device=device)
    dev = comm.device(device)
    torch.manual_seed(0)
    bundle = data.load("fashion-mnist", train_samples=samples)
    teacher = zoo.build(arch, 10, 1).to(dev).to(memory_format=torch.channels_last).eval()
    comm.broadcast_module(teacher)
    student = zoo.build(arch, 10, 1).to(dev).to(memory_format=torch.channels_last)
    comm.broadcast_module(student)
    shard = cache_teacher(teacher, comm.shard(bundle.train, even=True))
    finetune = FineTune(batch_size=128)  # precision 'auto': bf16 where the device runs it natively
    finetune.run(student, shard, epochs=0.1, seed=0, comm=comm)  # warm-up: thread pools, oneDNN primitives
    comm.barrier()
    began = time.perf_counter()
    seen = finetune.run(student, shard, epochs=1, seed=1, comm=comm)
    comm.barrier()
    seconds = time.perf_counter() - began
    if comm.is_root:
        save_json(
            {
                "samples": seen,
                "seconds": seconds,
                "samplesPerSecond": seen / seconds,
                "processes": comm.size,
                "backend": comm.backend,
                "device": str(dev),
                "threadsPerProcess": torch.get_num_threads(),
            },
            out,
        )
    comm.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
