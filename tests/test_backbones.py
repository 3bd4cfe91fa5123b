"""Backbone contract, parametrised over the registry (registering a backbone is enough to
have it tested here), and the published sizes of the networks osma reimplements.

Every backbone: feature / embedding shapes at crops 24, 32, 64 and 128, ``embed_dim``
honoured, gradients reaching the first layer, ``width`` scaling the parameter count, and
``metric`` / ``softmax`` training one short epoch on the ``micro`` zoo with it, then
reloading bit-identically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import load_bench
from osma import methods
from osma.data import load_split
from osma.images import load_image
from osma.models import BACKBONES, ConstrainedConv2d, create_backbone

#: tiny networks, a fixed budget of batches (as tests/test_contracts.py's FAST)
FAST = {"crop": 24, "per_class": 4, "width": 0.125, "embed_dim": 16, "workers": 0, "progress": False,
        "device": "cpu", "batches_per_epoch": 3}
NAMES = sorted(BACKBONES)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_channels_last_inference_gives_the_same_embeddings(name: str) -> None:
    """The inference forward hands the backbone channels-last input on the CPU from a batch
    of 64 crops on (issue 17, faster there): every backbone embeds as in the default layout,
    up to float rounding."""
    from osma.methods import METHODS
    from osma.precision import channels_last

    from osma.precision import CHANNELS_LAST_MIN_BATCH

    x = torch.rand(CHANNELS_LAST_MIN_BATCH, 3, 32, 32) * 2 - 1
    assert channels_last(x, "cpu").is_contiguous(memory_format=torch.channels_last)
    assert channels_last(x, "cpu", enabled=False) is x and channels_last(x, "cuda") is x
    one = x[0]
    assert channels_last(one, "cpu") is one  # not a batch: unchanged
    small = x[:CHANNELS_LAST_MIN_BATCH - 1]
    assert channels_last(small, "cpu") is small  # below the batch where it pays
    torch.manual_seed(0)
    m = METHODS["softmax"](["a", "b"], preprocess={"crop": 32}, options={"backbone": name, "width": 0.125,
                                                                            "embed_dim": 16}, device="cpu")
    m.train_mode(False)
    with torch.no_grad():
        assert m.channels_last
        fast = m._embed_pixels(x)
        m.channels_last = False
        plain = m._embed_pixels(x)
    assert not np.array_equal(fast, np.zeros_like(fast))
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6 * float(np.abs(plain).max()))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [24, 32, 64, 128])
def test_shapes_and_embed_dim(name: str, size: int) -> None:
    torch.manual_seed(0)
    for embed_dim in (7, 13):
        net = create_backbone(name, in_size=size, embed_dim=embed_dim, width=0.125).eval()
        x = torch.randn(3, 3, size, size)
        with torch.no_grad():
            f = net.forward_features(x)
            e = net.forward_head(f)
            out = net(x)
        assert f.ndim == 4 and f.shape[0] == 3 and f.shape[2] >= 1 and f.shape[3] >= 1, f.shape
        assert f.shape[2] < size and f.shape[3] < size  # the features are downsampled
        assert e.shape == (3, embed_dim) and torch.isfinite(e).all()
        torch.testing.assert_close(out, e, rtol=0, atol=0)  # forward = head(features)


@pytest.mark.parametrize("name", NAMES)
def test_other_input_channels(name: str) -> None:
    net = create_backbone(name, in_size=32, in_channels=1, embed_dim=5, width=0.125).eval()
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_to_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = create_backbone(name, in_size=32, embed_dim=8, width=0.125).train()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    net(x).pow(2).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname}"
    assert x.grad is not None and x.grad.abs().sum() > 0  # it reaches the input, through the first layer
    first = next(p for p in net.parameters() if p.ndim == 4)
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_width_scales_parameter_count(name: str) -> None:
    counts = [n_params(create_backbone(name, in_size=32, embed_dim=16, width=w)) for w in (0.125, 0.25, 0.5)]
    assert counts[0] < counts[1] < counts[2]
    # most weights are channel x channel products, so doubling the width more than doubles them
    assert counts[2] > 2 * counts[1]


@pytest.mark.parametrize("name", NAMES)
def test_constraints_only_in_mislnet(name: str) -> None:
    net = create_backbone(name, in_size=32, embed_dim=8, width=0.125)
    has = any(isinstance(m, ConstrainedConv2d) for m in net.modules())
    assert has == (name == "mislnet")


@pytest.fixture(scope="module")
def micro_split(micro_zoo: Path):  # noqa: ANN201
    return load_split(micro_zoo, "split1")


@pytest.mark.parametrize("method", ["metric", "softmax"])
@pytest.mark.parametrize("name", NAMES)
def test_trains_and_reloads(micro_zoo: Path, micro_split, name: str, method: str, tmp_path: Path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    methods.train(micro_zoo, "split1", method, run, epochs=1, seed=0, backbone=name, **FAST)
    doc = json.loads((run / "model.json").read_text())
    assert doc["method"] == method
    att = methods.load_attributor(run, device="cpu")
    assert att.opts.backbone == name and type(att.backbone) is BACKBONES.get(name)
    imgs = [load_image(s.path) for s in micro_split.test[:8]]
    p = att.predict_arrays(imgs)
    assert torch.isfinite(torch.as_tensor(p.score)).all()
    att.save(tmp_path / "again")
    a, b = load_file(str(run / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    q = methods.load_attributor(tmp_path / "again", device="cpu").predict_arrays(imgs)
    assert (q.score == p.score).all() and (q.pred == p.pred).all()


# ---------------------------------------------------------------------------- published sizes
# Counted with width=1 and the head sized as the original classifier (embed_dim = the
# paper's number of classes), so the whole network is comparable. torch counts trainable
# tensors only (BN weight and bias, not its running statistics), as Keras' "trainable
# params" and torchvision's sum of parameters do. The architectures match, so the counts
# are equal, not close: a tolerance would hide a wrong layer.

def test_resnet50_size_matches_torchvision() -> None:
    # torchvision.models.resnet50(): 25,557,032 parameters (23,508,032 + the 2048 x 1000 fc)
    assert n_params(create_backbone("resnet50", in_size=224, embed_dim=1000)) == 25_557_032
    # small crops: the 7x7x3x64 stem becomes 3x3x3x64, nothing else changes
    small = n_params(create_backbone("resnet50", in_size=32, embed_dim=1000))
    assert small == 25_557_032 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    net = create_backbone("resnet50", in_size=224, embed_dim=1000)
    assert net.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 2048, 7, 7)  # total stride 32
    bottlenecks = [m for m in net.layers if m.__class__.__name__ == "_Bottleneck"]
    assert len(bottlenecks) == 3 + 4 + 6 + 3


def test_xception_size_matches_paper() -> None:
    # Chollet 2017, Table 3 (and keras.applications.Xception's trainable parameters): 22,855,952
    net = create_backbone("xception", in_size=299, embed_dim=1000, middle_blocks=8)
    assert n_params(net) == 22_855_952
    # one middle block: 3 x (depthwise 728 x 3 x 3 + pointwise 728 x 728 + BN 2 x 728)
    per_block = 3 * (728 * 9 + 728 * 728 + 2 * 728)
    default = create_backbone("xception", in_size=299, embed_dim=1000)
    assert n_params(default) == 22_855_952 - 4 * per_block  # default: 4 middle blocks
    # the first convolution has stride 2 above 64 px, stride 1 at 64 px and below
    assert net.entry[0].stride == (2, 2) and create_backbone("xception", in_size=64).entry[0].stride == (1, 1)


def test_camid_cnn_size_matches_bondi() -> None:
    # the authors' deploy.prototxt (64x64x3 patches, 18 camera models), by hand:
    convs = (4 * 4 * 3 * 32 + 32) + (5 * 5 * 32 * 48 + 48) + (5 * 5 * 48 * 64 + 64) + (5 * 5 * 64 * 128 + 128)
    fcs = (128 * 128 + 128) + (128 * 18 + 18)
    assert convs + fcs == 340_642
    net = create_backbone("camid_cnn", in_size=64, embed_dim=18)
    assert n_params(net) == 340_642
    # Caffe's round-up pooling: 64 -> 61 -> 31 -> 27 -> 14 -> 10 -> 5 -> 1
    assert net.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 1, 1)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in net.features)


def test_srnet_structure_and_size() -> None:
    # SRNet (Boroumand et al. 2019, Fig. 1): 1 grey channel, 2 classes; bias-free 3x3 conv + BN
    def conv_bn(cin: int, cout: int, k: int = 3) -> int:
        return cin * cout * k * k + 2 * cout

    expected = (
        conv_bn(1, 64) + conv_bn(64, 16)                                           # L1-L2, type 1
        + 5 * 2 * conv_bn(16, 16)                                                  # L3-L7, type 2
        + sum(conv_bn(a, b) + conv_bn(b, b) + conv_bn(a, b, 1)                     # L8-L11, type 3
              for a, b in [(16, 16), (16, 64), (64, 128), (128, 256)])
        + conv_bn(256, 512) + conv_bn(512, 512)                                    # L12, type 4
        + 512 * 2 + 2                                                              # classifier
    )
    net = create_backbone("srnet", in_size=256, in_channels=1, embed_dim=2)
    assert n_params(net) == expected == 4_776_962
    x = torch.zeros(1, 1, 256, 256)
    # no pooling in L1-L7: the residual keeps the full resolution; L8-L11 halve it four times
    assert net.type2(net.type1(x)).shape == (1, 16, 256, 256)
    assert net.forward_features(x).shape == (1, 512, 16, 16)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 2 + 5 * 2 + 4 * 2 + 2  # 12 layers: 22 3x3 convolutions


def test_bad_sizes_are_rejected() -> None:
    for name in ("xception", "srnet"):
        with pytest.raises(ValueError, match="in_size"):
            create_backbone(name, in_size=8)
    with pytest.raises(ValueError, match="middle_blocks"):
        create_backbone("xception", in_size=32, middle_blocks=-1)


# ---------------------------------------------------------------------------- bench/backbones.py
def test_backbone_sizes_step_time(capsys: pytest.CaptureFixture) -> None:
    sizes = load_bench("backbone_sizes")
    net = create_backbone("mislnet", in_size=24, embed_dim=8)
    before = [p.detach().clone() for p in net.parameters()]
    assert sizes.step_seconds(net, 2, 24, steps=2) > 0
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()) if p.requires_grad)  # real steps
    assert sizes.main(["--crops", "24", "--backbones", "mislnet,camid_cnn", "--step-batch", "2", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train step (s, batch 2" in lines[0]
    rows = [line.strip("|").split("|") for line in lines[2:]]
    assert [r[0].strip() for r in rows] == ["mislnet", "camid_cnn"]
    assert all(len(r) == 6 and float(r[5]) > 0 for r in rows)
    assert sizes.main(["--crops", "24", "--backbones", "mislnet"]) == 0
    assert "train step" not in capsys.readouterr().out  # timing only when asked
    with pytest.raises(SystemExit):
        sizes.main(["--backbones", "mislnet,no_such_net"])
    assert "no_such_net" in capsys.readouterr().err


def test_bench_metric_seconds_per_epoch(tmp_path: Path) -> None:
    bench = load_bench("backbones")
    recs = [{"epoch": 1, "seconds": 10.0}, {"epoch": 2, "seconds": 3.0}, {"epoch": 3, "seconds": 9.0},
            {"epoch": 3, "seconds": 5.0}]  # epoch 3 logged twice (a resumed run): the last counts
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert bench.metric_seconds_per_epoch(tmp_path, 1) == pytest.approx((3.0 + 5.0) / 2)  # epoch 1 is pretraining
    assert bench.metric_seconds_per_epoch(tmp_path, 0) == pytest.approx((10.0 + 3.0 + 5.0) / 3)
    assert bench.metric_seconds_per_epoch(tmp_path / "none", 0) is None


def test_bench_backbones_end_to_end(micro_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Both variants of one backbone train, evaluate and fill the table; a re-run skips them."""
    bench = load_bench("backbones")
    out = tmp_path / "bench"
    args = [str(micro_zoo), "--splits", "split1", "--backbones", "camid_cnn", "--epochs", "1", "--pretrain-epochs", "1",
            "--out", str(out), "--device", "cpu", "--no-plots",
            *[f"--option={k}={v}" for k, v in FAST.items() if k not in ("device", "progress")]]
    assert bench.main(args) == 0
    table = json.loads((out / "table.json").read_text())
    assert set(table["backbones"]) == {"camid_cnn", "camid_cnn-pretrain"}
    for row in table["backbones"].values():
        assert list(row) == list(bench.HEADERS) and all(row[h]["n"] == 1 for h in ("aF1-CRR AUC", "aF1", "CRR"))
        assert row["s/epoch"]["mean"] > 0
    logs = {n: [json.loads(x) for x in (out / "runs" / "split1" / n / "train_log.jsonl").read_text().splitlines()]
            for n in table["backbones"]}
    assert [("loss_pretext" in r) for r in logs["camid_cnn-pretrain"]] == [True, False]  # pretext, then metric
    assert [("loss_pretext" in r) for r in logs["camid_cnn"]] == [False]
    assert "| camid_cnn-pretrain |" in (out / "table.md").read_text()
    capsys.readouterr()
    assert bench.main(args) == 0
    assert capsys.readouterr().out.count("done, skipping") == 2
    with pytest.raises(SystemExit):
        bench.main([str(micro_zoo), "--backbones", "no_such_net", "--out", str(out)])

    # in pieces: one variant only, with the rows of an earlier table (same settings) before it
    earlier = json.loads((out / "table.json").read_text())
    earlier["backbones"] = {"other": earlier["backbones"]["camid_cnn"],
                            "camid_cnn-pretrain": {h: {"mean": 0.0, "std": 0.0, "n": 1} for h in bench.HEADERS}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    capsys.readouterr()
    assert bench.main([*args, "--variants", "pretrain", "--merge", str(tmp_path / "earlier.json")]) == 0
    assert capsys.readouterr().out.count("done, skipping") == 1  # the pretrained run only
    merged = json.loads((out / "table.json").read_text())
    assert list(merged["backbones"]) == ["other", "camid_cnn-pretrain"]  # earlier rows first
    assert merged["backbones"]["camid_cnn-pretrain"] == table["backbones"]["camid_cnn-pretrain"]  # this run's wins
    assert merged["merged"] == [str(tmp_path / "earlier.json")]
    earlier["epochs"] = 7
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match="'epochs' is 7"):
        bench.merge_rows([tmp_path / "earlier.json"], merged)
    with pytest.raises(SystemExit):
        bench.main([*args, "--variants", "finetune"])
