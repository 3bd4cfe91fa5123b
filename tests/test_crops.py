"""Whole-image evidence (osma.crops): the crop grid, the aggregations on hand-made crop
outputs, and the multi-crop path of a trained model (issue 15, item 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_bench

from osma.crops import AGGREGATIONS, CropOutputs, aggregate, crop_grid, image_crops
from osma.images import eval_patch
from osma.scores.base import Features, Prediction


def _overlap(a: tuple[int, int], b: tuple[int, int], s: int) -> bool:
    return abs(a[0] - b[0]) < s and abs(a[1] - b[1]) < s


@pytest.mark.parametrize("h,w,s,n", [(64, 64, 32, 4), (100, 61, 32, 9), (97, 203, 32, 9), (4000, 3000, 32, 16),
                                     (33, 65, 32, 4), (32, 32, 32, 9), (300, 40, 32, 5)])
def test_grid_inside_no_overlap_at_most_n(h: int, w: int, s: int, n: int) -> None:
    g = crop_grid(h, w, s, n)
    assert 1 <= len(g) <= n
    assert len(g) == min(n, (h // s) * (w // s)) or len(g) < n  # as many as fit a grid
    for t, left in g:
        assert 0 <= t <= h - s and 0 <= left <= w - s
    assert not any(_overlap(a, b, s) for i, a in enumerate(g) for b in g[i + 1:])


def test_grid_positions_by_hand() -> None:
    # 2 x 2 grid on 64 x 64: the four quadrants
    assert crop_grid(64, 64, 32, 4) == [(0, 0), (0, 32), (32, 0), (32, 32)]
    # 3 x 3 on 100 x 100: corners at 0, floor(34 + .5) = 34, 68
    assert crop_grid(100, 100, 32, 9) == [(t, le) for t in (0, 34, 68) for le in (0, 34, 68)]
    # n = 9 but only 2 x 2 cells fit in 64 x 70
    assert crop_grid(64, 70, 32, 9) == [(0, 0), (0, 38), (32, 0), (32, 38)]
    # 1 x 3 on a wide image: rows centred
    assert crop_grid(40, 200, 32, 3) == [(4, 0), (4, 84), (4, 168)]
    # n = 4 on 96 x 32 (tall, one column): 3 crops
    assert crop_grid(96, 32, 32, 4) == [(0, 0), (32, 0), (64, 0)]


def test_grid_spreads_over_the_image() -> None:
    # the first and last crops touch the borders: the grid covers the whole extent
    h, w, s = 1000, 750, 32
    g = crop_grid(h, w, s, 12)
    tops, lefts = sorted({t for t, _ in g}), sorted({le for _, le in g})
    assert tops[0] == 0 and tops[-1] == h - s and lefts[0] == 0 and lefts[-1] == w - s
    assert len(tops) * len(lefts) == 12 and len(tops) == 4  # 4 x 3 follows the 4:3 aspect ratio


def test_one_crop_is_the_centre_crop() -> None:
    rng = np.random.default_rng(0)
    for shape in [(100, 61, 3), (31, 17, 3), (64, 64, 3), (33, 90, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(image_crops(img, 32, 1)[0], eval_patch(img, 32))
        np.testing.assert_array_equal(image_crops(img, 32, 1, resize=48)[0], eval_patch(img, 32, 48))


def test_small_and_odd_images() -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (20, 13, 3), dtype=np.uint8)
    c = image_crops(small, 32, 9)
    assert c.shape == (1, 32, 32, 3)  # padded to 32 x 32: one crop
    np.testing.assert_array_equal(c[0], eval_patch(small, 32))
    odd = rng.integers(0, 256, (65, 97, 3), dtype=np.uint8)
    c = image_crops(odd, 32, 9)
    assert c.shape == (6, 32, 32, 3)  # 2 x 3 cells
    np.testing.assert_array_equal(c[-1], odd[33:65, 65:97])


# ----------------------------------------------------------------------------- aggregations


def _outputs() -> CropOutputs:
    """Two images: image 0 has 3 crops, image 1 has 1. The 'score' predicts from 2-d logits:
    pred = argmax, knownness = max logit, class scores = logits."""
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [3.0, 3.0]], np.float32)
    logits = np.array([[2.0, 0.0], [0.0, 5.0], [1.0, 0.5], [0.0, 1.0]], np.float32)

    def predict(f: Features) -> Prediction:
        lg = f.logits
        return Prediction(np.argmax(lg, 1), lg.max(1), lg, f.embedding)

    return CropOutputs(Features(emb, logits), np.array([3, 1]), predict)


def test_mean_aggregation() -> None:
    p = aggregate("mean", _outputs())
    # mean logits of image 0: (1, 5.5/3) -> class 1, knownness 5.5/3
    np.testing.assert_allclose(p.class_scores[0], [1.0, 5.5 / 3], rtol=1e-6)
    assert p.pred.tolist() == [1, 1]
    np.testing.assert_allclose(p.score, [5.5 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(p.embedding[0], [2 / 3, 0.4], rtol=1e-6)


def test_mean_score_aggregation() -> None:
    p = aggregate("mean_score", _outputs())
    # crop knownness 2, 5, 1 -> mean 8/3; mean class scores as the mean logits
    np.testing.assert_allclose(p.score, [8 / 3, 1.0], rtol=1e-6)
    assert p.pred.tolist() == [1, 1]


def test_vote_aggregation() -> None:
    p = aggregate("vote", _outputs())
    # crop votes 0, 1, 0 -> class 0; knownness: mean over its voters (2 + 1) / 2
    assert p.pred.tolist() == [0, 1]
    np.testing.assert_allclose(p.score, [1.5, 1.0])


def test_vote_tie_goes_to_more_confident_voters() -> None:
    c = _outputs()
    c = CropOutputs(Features(c.features.embedding[1:], c.features.logits[1:]), np.array([2, 1]), c.predict)
    p = aggregate("vote", c)  # votes 1 (score 5) and 0 (score 1): tie -> 1
    assert p.pred.tolist() == [1, 1]
    np.testing.assert_allclose(p.score, [5.0, 1.0])


def test_max_aggregation() -> None:
    p = aggregate("max", _outputs())
    assert p.pred.tolist() == [1, 1]
    np.testing.assert_allclose(p.score, [5.0, 1.0])
    np.testing.assert_allclose(p.class_scores[0], [0.0, 5.0])


def test_single_crop_every_aggregation_is_the_crop() -> None:
    base = _outputs()
    one = CropOutputs(base.features, np.ones(4, np.int64), base.predict)
    direct = base.predict(base.features)
    for name in AGGREGATIONS:
        p = aggregate(name, one)
        assert p.pred.tolist() == direct.pred.tolist(), name
        np.testing.assert_allclose(p.score, direct.score, rtol=1e-6, err_msg=name)


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="unknown crop aggregation"):
        aggregate("median", _outputs())


# ----------------------------------------------------------------------------- a real model


def test_model_multi_crop(tmp_path) -> None:  # noqa: ANN001
    from osma.attribution import Model
    from osma.methods import create_method

    att = create_method("softmax", ["a", "b"], device="cpu", crop=16, embed_dim=8)
    rng = np.random.default_rng(0)
    att.fit_score(rng.normal(size=(10, 8)).astype(np.float32), np.arange(10) % 2)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)]
    assert (att.crops, att.crop_agg) == (4, "mean")  # a new model's default (DEFAULT_CROPS, measured)
    att.set_inference(crops=1)
    emb1 = att.embed_arrays(imgs)
    p1, n1 = att.predict_images(imgs)
    assert n1.tolist() == [1, 1]
    np.testing.assert_allclose(p1.score, att.predict_embeddings(emb1).score)
    att.set_inference(crops=4, agg="mean")
    p4, n4 = att.predict_images(imgs)
    assert n4.tolist() == [4, 1]  # a 40 x 50 image holds 2 x 3 cells of 16: a 2 x 2 grid; the small one: 1
    crops_emb, counts = att.embed_crops(imgs)
    np.testing.assert_allclose(att.embed_arrays(imgs)[0], crops_emb[:4].mean(0), rtol=1e-5)
    # enroll / discover embed through Model.embed: the mean crop embedding, decoded then cropped
    emb, kept, errors = Model(att).embed(imgs)
    assert kept == [0, 1] and not errors
    np.testing.assert_allclose(emb, att.embed_arrays(imgs), rtol=1e-5, atol=1e-6)
    # the row says how many crops were used
    rows = Model(att).attribute(imgs, tau=0.0)
    assert [r.crops for r in rows] == [4, 1] and rows[0].to_dict()["crops"] == 4
    # the setting is saved in the bundle and read back
    att.save(tmp_path)
    from osma.methods import load_attributor

    back = load_attributor(tmp_path, "cpu")
    assert (back.crops, back.crop_agg) == (4, "mean")
    assert json.loads((tmp_path / "model.json").read_text())["inference"] == {"crops": 4, "agg": "mean"}
    # one crop is saved without the key, and a bundle without it (one written before the
    # multi-crop default) loads with one crop: its tau was chosen with the centre crop
    att.set_inference(crops=1, agg="vote")
    att.save(tmp_path / "one")
    assert "inference" not in json.loads((tmp_path / "one" / "model.json").read_text())
    assert load_attributor(tmp_path / "one", "cpu").crops == 1
    doc = json.loads((tmp_path / "model.json").read_text())
    del doc["inference"]
    (tmp_path / "model.json").write_text(json.dumps(doc))
    legacy = load_attributor(tmp_path, "cpu")
    assert (legacy.crops, legacy.crop_agg) == (1, "mean")
    with pytest.raises(ValueError, match="unknown crop aggregation"):
        att.set_inference(agg="median")


# ----------------------------------------------------------------------------- training crops


def test_training_crops_cover_the_image_and_mixed_sizes_batch(tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    from osma.images import CropConfig, ImageDataset, make_loader

    sizes = [(128, 100), (33, 200), (20, 25), (64, 64)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        # pixel value encodes its position: row * w + col, split over two channels
        pos = np.arange(h * w).reshape(h, w)
        img = np.stack([pos // 256, pos % 256, np.full_like(pos, i)], -1).astype(np.uint8)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    ds = ImageDataset([(p, i % 2) for i, p in enumerate(paths)], CropConfig(size=32, train=True), seed=0)
    # over epochs, the random crops of the 128 x 100 image reach every pixel
    seen = np.zeros((128, 100), bool)
    for epoch in range(200):
        ds.set_epoch(epoch)
        x = ds[0][0].numpy()
        pos = x[0].astype(int) * 256 + x[1].astype(int)
        seen[pos // 100, pos % 100] = True
    assert seen.all()
    # images of mixed sizes (smaller and larger than the crop) batch into one tensor
    loader = make_loader(ds, 4, train=True, per_class=2, workers=0, seed=0)
    batch = next(iter(loader))
    assert tuple(batch[0].shape) == (4, 3, 32, 32)
    assert sorted(batch[0][:, 2, 0, 0].tolist()) == [0, 1, 2, 3]


def test_training_crop_offsets() -> None:
    from osma.images.transforms import _cover_offset

    class Fixed:  # an rng whose next integer draw is given
        def __init__(self, v: int) -> None:
            self.v = v

        def integers(self, low: int, high: int) -> int:
            assert low <= self.v < high
            return self.v

    # images up to twice the crop: the uniform draw of before, the same random stream
    for length, size in [(32, 24), (32, 16), (40, 32), (32, 32), (64, 32)]:
        for seed in range(20):
            a, b = np.random.default_rng(seed), np.random.default_rng(seed)
            assert _cover_offset(length, size, a) == int(b.integers(0, length - size + 1))
            assert a.random() == b.random()
    # images of at least 3 x crop - 1: border pixels covered as often as central ones
    for length, size in [(96, 32), (95, 32), (200, 7), (4000, 32)]:
        cover = np.zeros(length, int)
        for v in range(-(size - 1), length):
            off = _cover_offset(length, size, Fixed(v))
            assert 0 <= off <= length - size
            cover[off:off + size] += 1
        assert cover.min() == size and cover.max() <= 2 * size, (length, size)
        assert cover[0] == cover[-1] == size
        assert (cover[2 * size:-2 * size] == size).all()
    # in between: partly corrected (the first row more often than under uniform offsets)
    e = 80 - 64
    cover = np.zeros(80, int)
    for v in range(-e, 80 - 32 + e + 1):
        off = _cover_offset(80, 32, Fixed(v))
        cover[off:off + 32] += 1
    assert cover[0] == e + 1 and cover[40] == 32


def test_training_cache_is_bounded_in_bytes(tmp_path) -> None:  # noqa: ANN001
    import pickle

    from PIL import Image

    from osma.images import CropConfig, ImageDataset

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((40, 50, 3), i, np.uint8)).save(paths[-1])
    one = 40 * 50 * 3
    ds = ImageDataset([(p, 0) for p in paths], CropConfig(size=32, train=True), cache=True, cache_bytes=2 * one + 1)
    ds.preload(threads=2)
    assert len(ds._arrays) == 2 and ds._cached_bytes == 2 * one
    for i in range(4):  # images beyond the budget are decoded when used, and not kept
        assert int(ds[i][0][0, 0, 0]) == i
    assert len(ds._arrays) == 2
    back = pickle.loads(pickle.dumps(ds))  # picklable for spawned DataLoader workers
    assert int(back[3][0][0, 0, 0]) == 3


def test_multi_crop_on_the_server_path_and_in_bf16() -> None:
    """Crops (issue 15) x the batching server and --precision (issue 17): the server's
    prepared inputs are per-image crop stacks whose batched rows are ``attribute``'s, and
    every crop's forward runs in the inference precision."""
    from osma.attribution import Model
    from osma.methods import create_method

    att = create_method("softmax", ["a", "b"], device="cpu", crop=16, embed_dim=8)
    rng = np.random.default_rng(1)
    att.fit_score(rng.normal(size=(10, 8)).astype(np.float32), np.arange(10) % 2)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((40, 50, 3), (10, 12, 3), (64, 64, 3))]
    att.set_inference(crops=4, agg="vote")
    m = Model(att, precision="fp32")
    stacks = [m.prepare(a) for a in imgs]
    assert [s.shape for s in stacks] == [(4, 16, 16, 3), (1, 16, 16, 3), (4, 16, 16, 3)]
    taus = [0.0, -1e9, 0.5]
    batched = m.attribute_prepared(stacks, taus)
    for a, r, t in zip(imgs, batched, taus):
        alone = m.attribute(a, tau=t)[0]
        assert (r.source, r.nearest, r.threshold, r.crops) == (alone.source, alone.nearest, alone.threshold, alone.crops)
        assert r.score == pytest.approx(alone.score, abs=1e-5)
    assert [r.crops for r in batched] == [4, 1, 4]
    e32 = att.embed_arrays(imgs)
    assert m.set_precision("bf16") == "bf16" and m.precision == "bf16"
    e16 = att.embed_arrays(imgs)
    assert e16.dtype == np.float32 and not np.array_equal(e32, e16)  # autocast reached the crops
    cos = (e32 * e16).sum(1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e16, axis=1))
    assert cos.min() > 0.98, cos
    p16, n16 = att.predict_patches(stacks)  # the server's path, in bf16 too
    assert n16.tolist() == [4, 1, 4]
    np.testing.assert_allclose(p16.embedding, e16, rtol=1e-6, atol=1e-6)


def test_bench_crops_summary_by_hand() -> None:
    """bench/crops.py: mean and population std over splits per (method, crops, agg)."""
    bench = load_bench("crops")

    def row(split: str, agg: str, acc: float, a_all: float | None) -> dict:
        return {"method": "pose", "split": split, "crops": 4, "agg": agg, "crops_per_img": 4.0, "acc": acc,
                "auroc_seed": 60.0, "auroc_arch": 70.0, "auroc_dataset": None, "auroc_all": a_all}

    s = bench.summarize([row("split1", "mean", 90.0, 80.0), row("split1", "vote", 50.0, None),
                         row("split2", "mean", 94.0, 70.0)])
    assert [(c["agg"], c["n"]) for c in s] == [("mean", 2), ("vote", 1)]
    assert s[0]["acc"] == {"mean": 92.0, "std": 2.0} and s[0]["auroc_all"] == {"mean": 75.0, "std": 5.0}
    assert s[0]["auroc_dataset"] is None and s[1]["auroc_all"] is None
    md = bench.summary_markdown(s)
    assert "| pose | 4 | mean | 4.00 | 2 | 92.0 ± 2.0 | 60.0 ± 0.0 | 70.0 ± 0.0 | - | 75.0 ± 5.0 |" in md
    assert "| pose | 4 | vote | 4.00 | 1 | 50.0 | 60.0 | 70.0 | - | - |" in md
    one = [{**row(sp, "mean", a, u), "crops": 1} for sp, a, u in (("split1", 91.0, 78.0), ("split2", 95.0, 71.0))]
    lines = bench.paired(one + [row("split1", "mean", 90.0, 80.0), row("split2", "mean", 94.0, 70.0)])
    assert lines == ["pose crops=4 mean: acc -1.0 -1.0 (higher on 0 of 2); auroc_all +2.0 -1.0 (higher on 1 of 2)"]
