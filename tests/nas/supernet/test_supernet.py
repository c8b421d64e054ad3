"""The ofa_mbv3 supernet: real weight sharing, exact extraction, BN recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.supernet import recalibrate_bn
from search_spaces import load_space
from search_spaces.ofa_mbv3 import OFASupernet

SPEC = "ofa_mbv3:resolutions=[32,40],num_classes=10"


@pytest.fixture(scope="module")
def space():
    return load_space(SPEC)


def _train_steps(net, space, rng, steps=3):
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for _ in range(steps):
        arch = space.sample(rng)
        net.set_active(arch)
        r = space.resolution(arch)
        loss = torch.nn.functional.cross_entropy(net(torch.randn(8, 3, r, r)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_extracted_subnets_match_the_supernet_after_training_and_sorting(space):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = space.supernet()  # the space's own entry point (DESIGN.md)
    assert isinstance(net, OFASupernet)
    _train_steps(net, space, rng)
    net.sort_channels()
    net.eval()
    for arch in [space.sample(rng) for _ in range(5)] + [net.smallest(), net.largest()]:
        net.set_active(arch)
        r = space.resolution(arch)
        x = torch.randn(3, 3, r, r)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(arch).eval()(x), net(x), rtol=1e-5, atol=1e-5)


def test_sorting_channels_keeps_the_largest_subnet_function(space):
    torch.manual_seed(1)
    net = OFASupernet(space)
    _train_steps(net, space, np.random.default_rng(1))
    net.eval().set_active(net.largest())
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        before = net(x)
        net.sort_channels()
        torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-5)
    block = net.stages[0][0]
    importance = block.conv_pwl.weight.abs().sum((0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_weights_are_shared_and_only_the_active_part_learns(space):
    net = OFASupernet(space)
    arch = space.make([3] * 20, [3] * 20, [2] * 5, 32)
    net.set_active(arch)
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    block = net.stages[1][0]
    mid = block.mid(3)
    grad = block.conv_pw.weight.grad
    assert grad[:mid].abs().sum() > 0 and grad[mid:].abs().sum() == 0
    dw = block.conv_dw.weight.grad  # a 3x3 kernel comes from the centre of the shared 7x7 weight
    assert dw[:mid, :, 2:5, 2:5].abs().sum() > 0 and dw[:mid, :, 0, :].abs().sum() == 0
    assert net.stages[1][2].conv_pw.weight.grad is None  # depth 2: the third block never ran
    with torch.no_grad():
        block.conv_pw.weight[0].add_(1.0)
    big = net.extract(net.largest())
    assert torch.equal(big.blocks[2][0].conv_pw.weight[0], block.conv_pw.weight[0])


def test_bn_recalibration_sets_the_subnet_statistics(space):
    torch.manual_seed(2)
    net = OFASupernet(space)
    arch = space.sample(np.random.default_rng(3))
    net.set_active(arch)
    r = space.resolution(arch)
    batches = [torch.randn(16, 3, r, r) * 3 + 1 for _ in range(4)]
    recalibrate_bn(net, batches)
    first = net.bn1.running_mean.clone()
    recalibrate_bn(net, batches)
    torch.testing.assert_close(net.bn1.running_mean, first)  # an exact average, not a moving one
    assert net.bn1.running_mean.abs().sum() > 0 and net.bn1.momentum == 0.1
    net.eval()
    x = torch.randn(2, 3, r, r)
    with torch.no_grad():
        torch.testing.assert_close(net.extract(arch).eval()(x), net(x), rtol=1e-5, atol=1e-5)
