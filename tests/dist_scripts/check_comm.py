"""One rank of the distributed tests: exercises every Comm operation and writes what it saw to
OUT_DIR/rank<R>.json, for the test to compare across ranks.

    python check_comm.py BACKEND OUT_DIR [--device D] [--fail-rank R [--sleep]]
    --device D: where the tensors live (default cpu; cuda puts them on this rank's GPU, over NCCL with torch)
    --fail-rank R: rank R exits 3 mid-run while the others wait in a collective (--sleep: in time.sleep)
Each rank first writes its pid to OUT_DIR/pid<R>, for tests that signal or look for it.
"""

import json
import os
import sys
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kondense import distributed

backend, out_dir = sys.argv[1], sys.argv[2]
fail_rank = int(sys.argv[sys.argv.index("--fail-rank") + 1]) if "--fail-rank" in sys.argv else None
requested = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
torch.set_num_threads(1)

comm = distributed.init(backend, device=requested)
dev = comm.device(requested)
with open(os.path.join(out_dir, f"pid{comm.rank}"), "w") as f:
    f.write(str(os.getpid()))
result = {
    "rank": comm.rank,
    "size": comm.size,
    "local_rank": comm.local_rank,
    "backend": comm.backend,
    "is_root": comm.is_root,
    "device": str(dev),
    "env_local_world_size": os.environ.get("LOCAL_WORLD_SIZE"),
    "env_omp_num_threads": os.environ.get("OMP_NUM_THREADS"),  # what the launcher gave this rank
}

if fail_rank is not None:
    if comm.rank == fail_rank:
        time.sleep(1.0)  # let the others block in the collective below first
        sys.exit(3)
    if "--sleep" not in sys.argv:
        comm.allreduce_sum([1.0])  # blocks: the failing rank never joins
    time.sleep(120)  # (only reached if the collective did not fail) the launcher must stop us
    sys.exit(0)

result["allreduce"] = comm.allreduce_sum([comm.rank, 1])
result["object"] = comm.broadcast_object({"plan": [1, 2, 3], "from": comm.rank} if comm.is_root else None)

# broadcast_module: different random weights and buffers on each rank, root's everywhere afterwards.
torch.manual_seed(100 + comm.rank)
model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).to(dev)
model[1].running_mean.normal_()
comm.broadcast_module(model)
result["broadcast_state"] = {k: v.tolist() for k, v in model.state_dict().items()}

# shard of a 10-item data set.
items = TensorDataset(torch.arange(10))
result["shard"] = [int(items[i][0]) for i in comm.shard(items).indices]

# Training on this rank's shard only; averaged gradients keep all ranks identical, and equal to one
# process training on the full batch (equal shards, mean loss).
torch.manual_seed(0)
data = TensorDataset(torch.randn(8, 4).to(dev), torch.randn(8, 2).to(dev))
reference = nn.Linear(4, 2).to(dev)
torch.manual_seed(200 + comm.rank)
model = nn.Linear(4, 2).to(dev)
comm.broadcast_module(model)
reference.load_state_dict(model.state_dict())
mine = comm.shard(data, even=True)
x, y = (torch.stack(t) for t in zip(*[mine[i] for i in range(len(mine))], strict=True))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
loss_fn = nn.MSELoss()
for _ in range(3):  # explicit average_gradients
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    comm.average_gradients(model)
    opt.step()
    ref_opt.zero_grad()
    loss_fn(reference(data.tensors[0]), data.tensors[1]).backward()
    ref_opt.step()
result["params_avg"] = [p.tolist() for p in model.parameters()]
opt = comm.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model)
ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
for _ in range(3):  # wrapped optimizer: step() averages
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
    ref_opt.zero_grad()
    loss_fn(reference(data.tensors[0]), data.tensors[1]).backward()
    ref_opt.step()
result["params_wrapped"] = [p.tolist() for p in model.parameters()]
result["max_diff_to_full_batch"] = max(
    float((p - q).abs().max())
    for p, q in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
)

comm.barrier()
with open(os.path.join(out_dir, f"rank{comm.rank}.json"), "w") as f:
    json.dump(result, f)
comm.shutdown()
