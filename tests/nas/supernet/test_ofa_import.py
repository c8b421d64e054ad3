"""Once-for-All's own supernet (the `ofa` package's OFAMobileNetV3) imported into hwnas: the hwnas supernet and
the extracted timm model give the logits of `ofa`'s `get_active_subnet` model, subnet by subnet."""

from __future__ import annotations

import random

import pytest
import torch

from nas.supernet.imports import import_supernet
from nas.supernet.run import load_supernet_run
from nas.training.checkpoints import load_checkpoint
from search_spaces import load_space

ofa_networks = pytest.importorskip(
    "ofa.imagenet_classification.elastic_nn.networks", reason="needs the `ofa` package: pip install -e '.[peers]'"
)

RESOLUTIONS = (160, 224)


def ofa_supernet(width: float, seed: int = 0) -> torch.nn.Module:
    """`ofa`'s OFAMobileNetV3 of OFA's published layout, randomly initialised, with random BN statistics and
    affine parameters and random kernel transforms (they start as the identity, which would hide a
    transposed matrix)."""
    torch.manual_seed(seed)
    net = ofa_networks.OFAMobileNetV3(
        n_classes=1000,
        dropout_rate=0,
        width_mult=width,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn_like(t) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand_like(t) * 1.5 + 0.5)
            elif name.endswith("matrix"):
                t.copy_(torch.eye(t.shape[0]) + torch.randn_like(t) * 0.1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def ofa_config(arch: tuple, space) -> dict:
    return {"ks": list(space.kernels(arch)), "e": list(space.expands(arch)), "d": list(space.depths(arch))}


def archs(space, net, n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    out = [net.largest(), net.smallest()]
    out += [space.validate(tuple(rng.choice(g.options) for g in space.genes)) for _ in range(n)]
    return out


@pytest.mark.parametrize("width,wrapped", [(1.0, False), (1.2, True)])
def test_imported_ofa_supernet_gives_ofa_logits(tmp_path, width, wrapped):
    ofa = ofa_supernet(width)
    state = ofa.state_dict()
    path = tmp_path / "ofa.pth"
    torch.save({"state_dict": state, "epoch": 180} if wrapped else state, path)
    run = tmp_path / "run"
    imported = import_supernet(path, run, "ofa", resolutions=RESOLUTIONS)
    assert imported.width == width and imported.num_classes == 1000
    space = load_space(imported.space)
    net = space.supernet(num_classes=1000)
    net.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    net.eval()
    torch.manual_seed(1)
    worst = 0.0
    for i, arch in enumerate(archs(space, net, 8, seed=int(width * 10))):
        ofa.set_active_subnet(**ofa_config(arch, space))
        reference = ofa.get_active_subnet(preserve_weight=True).eval()
        model = net.extract(arch).eval()
        net.set_active(arch)
        for r in RESOLUTIONS:
            x = torch.randn(2, 3, r, r)
            with torch.no_grad():
                want, got, timm_out = reference(x), net(x), model(x)
            scale = want.abs().max().item()
            assert want.std(1).min().item() > 0.01  # the logits differ between classes: no agreement by constants
            err = max((got - want).abs().max().item(), (timm_out - want).abs().max().item()) / scale
            worst = max(worst, err)
            assert err < 1e-5, f"subnet {i} at {r}: relative difference {err:.2e}"
            assert torch.equal(got.argmax(1), want.argmax(1))
    assert worst < 1e-5


def test_a_checkpoint_of_another_layout_is_one_line_naming_the_key(tmp_path):
    state = ofa_supernet(1.0).state_dict()
    path = tmp_path / "ofa.pth"
    torch.save({**state, "blocks.1.conv.depth_conv.conv.9to7_matrix": torch.eye(49)}, path)
    with pytest.raises(ValueError, match=r"key 'blocks.1.conv.depth_conv.conv.9to7_matrix' has no place"):
        import_supernet(path, tmp_path / "a", "ofa")
    del state["blocks.7.conv.depth_conv.se.fc.expand.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"no 'blocks.7.conv.depth_conv.se.fc.expand.bias'"):
        import_supernet(path, tmp_path / "b", "ofa")
    assert not (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "b" / "checkpoint.pt").exists()


def test_weights_that_are_not_numbers_or_a_classifier_without_classes_are_refused(tmp_path):
    state = ofa_supernet(1.0).state_dict()
    path = tmp_path / "ofa.pth"
    nan = torch.full_like(state["first_conv.conv.weight"], float("nan"))
    torch.save({**state, "first_conv.conv.weight": nan}, path)
    with pytest.raises(ValueError, match=r"ofa.pth: 1 tensor\(s\) hold NaN or infinite values \(first_conv.conv"):
        import_supernet(path, tmp_path / "a", "ofa")
    empty = {**state, "classifier.linear.weight": state["classifier.linear.weight"][:0]}
    empty["classifier.linear.bias"] = state["classifier.linear.bias"][:0]
    torch.save(empty, path)
    with pytest.raises(ValueError, match=r"ofa.pth: 'classifier.linear.weight' has shape \[0, 1280\]"):
        import_supernet(path, tmp_path / "b", "ofa")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_width_that_disagrees_with_the_checkpoint_is_refused(tmp_path):
    path = tmp_path / "ofa.pth"
    torch.save(ofa_supernet(1.0).state_dict(), path)
    with pytest.raises(ValueError, match=r"width 1.0 supernet, but --width 1.2 was given"):
        import_supernet(path, tmp_path / "run", "ofa", width=1.2)


def test_an_imported_run_is_a_supernet_run(tmp_path):
    path = tmp_path / "ofa.pth"
    torch.save(ofa_supernet(1.0).state_dict(), path)
    import_supernet(path, tmp_path / "run", "ofa", data_path=str(tmp_path / "imagenet"), resolutions=(128,))
    with pytest.raises(ValueError, match=r"ImageFolder root .*imagenet.* is not a directory"):
        load_supernet_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"exists already"):
        import_supernet(path, tmp_path / "run", "ofa")


def imagenet_like(root, classes: int = 1000, per_class: int = 10, size: int = 16) -> None:
    """A folder of ImageNet's shape (train/<wnid>/, val/<wnid>/) with random pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 1)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.slow
def test_the_cli_imports_a_checkpoint_that_eval_subnet_and_export_accept(tmp_path, capsys):
    from nas.cli.main import main

    path = tmp_path / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save({"state_dict": ofa_supernet(1.0).state_dict()}, path)
    imagenet_like(tmp_path / "imagenet")
    run = tmp_path / "run"
    argv = ["import-supernet", str(path), "--from", "ofa", "--data", str(tmp_path / "imagenet")]
    assert main([*argv, "--data-resolution", "64", "--resolutions", "64", "--out", str(run)]) == 0
    assert "OFA's width-1.0 supernet (1000 classes" in capsys.readouterr().err
    space = load_space("ofa_mbv3:resolutions=[64],num_classes=1000")
    arch = space.to_str(space.supernet().smallest())
    assert main(["eval-subnet", str(run), "--arch", arch]) == 0
    assert "val top-1 of" in capsys.readouterr().out
    assert main(["export", str(run), "--arch", arch, "--out", str(tmp_path / "best")]) == 0
    assert (tmp_path / "best" / "model.onnx").exists()
    assert main([*argv, "--out", str(run)]) == 2
    assert "exists already" in capsys.readouterr().err
