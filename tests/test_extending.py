"""docs/extending.md's worked examples, executed: a score, a method and a backbone are
registered from the page's code, used end to end on the micro zoo, then unregistered."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from osma import methods
from osma.data import load_split
from osma.evaluation import evaluate, with_score
from osma.models import BACKBONES
from osma.scores import SCORES, create_score

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _example(tag: str) -> str:
    blocks = re.findall(r"```python\n(# extending: (\w+)\n.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    code = [b for b, t in blocks if t == tag]
    assert len(code) == 1, f"docs/extending.md has no single '# extending: {tag}' example"
    return code[0]


@pytest.fixture
def registered():  # noqa: ANN201
    """Execute the three examples; remove what they registered afterwards."""
    before = (set(SCORES), set(methods.METHODS), set(BACKBONES))
    mod = types.ModuleType("extending_example")  # dataclasses look their module up in sys.modules
    sys.modules[mod.__name__] = mod
    for tag in ("score", "method", "backbone"):
        exec(compile(_example(tag), f"docs/extending.md ({tag})", "exec"), mod.__dict__)  # noqa: S102 - our own docs
    yield mod
    del sys.modules[mod.__name__]
    for reg, old in zip((SCORES, methods.METHODS, BACKBONES), before):
        for k in set(reg) - old:
            del reg[k]


def test_extending_examples_run(registered, micro_zoo: Path, tmp_path: Path) -> None:  # noqa: ANN001
    assert "cosine" in SCORES and "softmax_smooth" in methods.METHODS and "two_conv" in BACKBONES
    # the score, checked against a direct computation
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 5))
    lab = np.repeat(np.arange(3), 10)
    s = create_score("cosine", {"power": 2})
    from osma.scores import Features

    s.fit(Features(emb.astype(np.float32)), lab, 3)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    m = np.stack([unit[lab == c].mean(0) for c in range(3)])
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    ref = (1 + unit @ m.T) ** 2
    p = s.predict(Features(emb.astype(np.float32)))
    np.testing.assert_allclose(p.class_scores, ref, rtol=1e-5)
    np.testing.assert_allclose(p.score, ref.max(1), rtol=1e-5)
    # the method on the backbone, then evaluated with the score; the bundle reloads
    fast = dict(crop=24, per_class=4, width=0.25, embed_dim=16, workers=0, progress=False, device="cpu",
                batches_per_epoch=3)
    att = methods.train(micro_zoo, "split1", "softmax_smooth", tmp_path / "run", epochs=1, seed=0,
                        backbone="two_conv", smoothing=0.2, **fast)
    assert att.opts.smoothing == 0.2
    sp = load_split(micro_zoo, "split1")
    emb_tr, lab_tr = att.embed_samples(sp.train)
    report = evaluate(with_score(att, "cosine", {"power": 2.0}, emb_tr, lab_tr), sp, plots=False)
    assert report["score"] == {"name": "cosine", "options": {"power": 2.0}}
    back = methods.load_attributor(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(back.predict_embeddings(emb_tr[:5]).score, att.predict_embeddings(emb_tr[:5]).score)
