"""Run by test_supernet_training under torchrun: trains a small supernet, saves each rank's weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nas.data import Split, TaskData, digits
from nas.supernet.train import TrainConfig, train
from search_spaces import load_space
from search_spaces.ofa_mbv3 import OFASupernet

out = Path(sys.argv[1])
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"  # cuda: NCCL
d = digits()
cut = lambda s, k: Split(s.images[:k], s.labels[:k])
data = TaskData(d.name, cut(d.train, 256), cut(d.val, 64), cut(d.test, 64), 10, d.mean, d.std)
torch.manual_seed(int(__import__("os").environ["RANK"]))  # different initial weights: rank 0's must win
net = OFASupernet(load_space("ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"))
train(
    net,
    data,
    TrainConfig(epochs=1, batch_size=16, lr=0.05, random_subnets=1, checkpoint_every=4, seed=3, device=device),
    out,
)
torch.save(net.state_dict(), out / f"rank{dist.get_rank()}.pt")
dist.destroy_process_group()
