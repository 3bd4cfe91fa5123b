"""``prnu`` (Marra et al., MIPR 2019): planted fingerprints are found, the normalised
correlation matches an independent NumPy computation, enrollment, and training through
the ordinary trainer without an optimisation step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma import methods
from osma.scores import Features, create_score


SIZE = 32
GRAY = np.array([0.29893602, 0.58704307, 0.11402090])


def _pattern(c: int) -> np.ndarray:
    """Source c's fixed noise pattern (gray levels, the same in the three channels)."""
    return np.random.default_rng(100 + c).normal(0, 5.0, (SIZE, SIZE))


def _images(c: int, n: int, seed: int) -> list[np.ndarray]:
    """Smooth content (bicubic upsampling of 4x4 random colours) + the source's pattern +
    fresh noise, as uint8."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = Image.fromarray(rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
        im = np.asarray(base, np.float64) + _pattern(c)[..., None] + rng.normal(0, 2.0, (SIZE, SIZE, 3))
        out.append(np.clip(np.round(im), 0, 255).astype(np.uint8))
    return out


def _fitted(n_per_class: int = 30):  # noqa: ANN202
    m = methods.create_method("prnu", ["s0", "s1", "s2"], crop=SIZE, device="cpu")
    imgs = [im for c in range(3) for im in _images(c, n_per_class, seed=c)]
    labels = np.repeat(np.arange(3), n_per_class)
    emb = m.embed_arrays(imgs)
    m.fit_score(emb, labels)
    return m, emb, labels


def test_embedding_is_the_zero_mean_luminance_wavelet_residual() -> None:
    """The embedding of an image = x - denoise_wavelet(x) per channel (x in [0, 1]), in
    luminance, minus its mean (computed here directly with scikit-image)."""
    from skimage.restoration import denoise_wavelet

    m = methods.create_method("prnu", ["a", "b"], crop=SIZE, device="cpu")
    assert m.opts.embed_dim == SIZE * SIZE and not list(m.backbone.parameters())
    im = _images(0, 1, seed=5)[0]
    x = im.astype(np.float64) / 255.0
    r = (x - denoise_wavelet(x, wavelet="db4", mode="soft", method="BayesShrink", rescale_sigma=True,
                             channel_axis=-1, convert2ycbcr=False)) @ GRAY
    r -= r.mean()
    # the pipeline's pixels are float32 (uint8 / 127.5 - 1): a ~1e-7 relative difference
    np.testing.assert_allclose(m.embed_arrays([im])[0], r.ravel(), atol=2e-5)


def test_planted_fingerprints_are_recovered_and_attributed() -> None:
    m, _, _ = _fitted()
    fp = m.score.fingerprints.numpy()
    planted = np.stack([(_pattern(c) - _pattern(c).mean()).ravel() for c in range(3)])
    corr = np.corrcoef(np.concatenate([fp, planted]))[:3, 3:]  # fitted x planted
    assert np.all(np.diag(corr) > 0.6), corr
    assert np.all(np.abs(corr[~np.eye(3, dtype=bool)]) < 0.2), corr
    for c in range(3):
        p = m.predict_arrays(_images(c, 10, seed=50 + c))
        assert (p.pred == c).all(), (c, p.pred)
        assert p.score.min() > 0.2


def test_correlation_is_the_normalised_cross_correlation() -> None:
    """class_scores = Pearson correlation (np.corrcoef: zero-mean, unit-norm) of the test
    residual with each class's mean training residual."""
    m, emb, labels = _fitted(n_per_class=10)
    test = m.embed_arrays(_images(1, 4, seed=77))
    fps = [emb[labels == c].astype(np.float64).mean(0) for c in range(3)]
    expect = np.array([[np.corrcoef(t.astype(np.float64), f)[0, 1] for f in fps] for t in test])
    p = m.predict_embeddings(test)
    np.testing.assert_allclose(p.class_scores, expect, atol=1e-5)
    np.testing.assert_allclose(p.score, expect.max(1), atol=1e-5)
    np.testing.assert_array_equal(p.pred, expect.argmax(1))
    # the head's logits (what msp / max_logit / energy read) are the same correlations
    np.testing.assert_allclose(m.features_of(test).logits, expect, atol=1e-5)


def test_correlation_score_formula_on_arbitrary_embeddings() -> None:
    """The score alone: cosine of the embedding with the class mean (by hand)."""
    rng = np.random.default_rng(0)
    x, lab = rng.normal(size=(30, 5)), np.repeat(np.arange(3), 10)
    s = create_score("correlation")
    s.fit(Features(x.astype(np.float32)), lab, 3)
    q = rng.normal(size=(4, 5))
    means = np.stack([x.astype(np.float32).astype(np.float64)[lab == c].mean(0) for c in range(3)])
    cos = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in means] for a in q.astype(np.float32)])
    np.testing.assert_allclose(s.predict(Features(q.astype(np.float32))).class_scores, cos, atol=1e-6)


def test_enrollment_adds_a_fingerprint() -> None:
    m, _, _ = _fitted(n_per_class=20)
    # a fourth source, enrolled from 8 images (fresh pattern)
    new = methods.create_method("prnu", ["s0", "s1", "s2", "s3"], crop=SIZE, device="cpu")
    assert new.opts.embed_dim == m.opts.embed_dim
    m.enroll("s3", m.embed_arrays(_images(3, 8, seed=13)))
    p = m.predict_arrays(_images(3, 10, seed=14))
    assert m.classes[-1] == "s3" and (p.pred == 3).all(), p.pred


def test_trains_through_the_trainer_without_steps(micro_zoo: Path, tmp_path: Path) -> None:
    att = methods.train(micro_zoo, "split1", "prnu", tmp_path, epochs=3, seed=0, crop=24, workers=0,
                        progress=False, device="cpu", embed_dim=16)
    assert att.opts.embed_dim == 24 * 24  # from the crop, whatever was asked
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["training"]["epochs_done"] == 0 and doc["score"]["name"] == "correlation"
    assert not list((tmp_path / "checkpoints").glob("epoch_*")) and not (tmp_path / "train_log.jsonl").exists()
    back = methods.load_attributor(tmp_path, device="cpu")
    np.testing.assert_array_equal(back.score.fingerprints.numpy(), att.score.fingerprints.numpy())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="input"):
        methods.create_method("prnu", ["a", "b"], input="dct")
    with pytest.raises(ValueError, match="backbone"):
        methods.create_method("prnu", ["a", "b"], backbone="simple_cnn")
    with pytest.raises(ValueError, match="wavelet"):
        methods.create_method("prnu", ["a", "b"], wavelet="haar2")


def test_constant_channel_has_a_zero_residual_not_nan() -> None:
    """skimage estimates a NaN noise sigma for a channel whose finest details are all exactly
    zero (a constant 0 channel, as in saturated or synthetic images): its residual is 0."""
    from osma.methods.prnu import wavelet_residuals

    rng = np.random.default_rng(0)
    img = np.zeros((1, 32, 32, 3))
    img[0, :, :, 0] = rng.random((32, 32))
    r = wavelet_residuals(img)
    assert np.isfinite(r).all()
    # only the red channel carries a residual: GRAY[0] x (red - its own wavelet denoising), zero-mean
    from skimage.restoration import denoise_wavelet

    from osma.methods.prnu import GRAY

    red = img[0, :, :, 0]
    den = denoise_wavelet(red, wavelet="db4", mode="soft", method="BayesShrink", rescale_sigma=True)
    expect = GRAY[0] * (red - den)
    np.testing.assert_allclose(r[0], expect - expect.mean(), atol=1e-12)
