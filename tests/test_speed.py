"""Issue 17: the server's micro-batching, ``--precision auto|fp32|bf16``.

Nothing here times anything beyond a bound far above the expected value (the machine is
shared); speed is measured by bench/throughput.py, never by unit tests.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import load_bench
from serving import free_port, png_bytes, running
from test_attribution import colour_image, make_fake
from typer.testing import CliRunner

import osma
from osma import precision as prec
from osma.attribution import Model
from osma.server import Batcher, create_app

TIMEOUT = httpx.Timeout(60.0)


# --- the batcher on its own (a stub model) -----------------------------------------------
class _Stub:
    """``attribute_prepared`` that records batches; a patch equal to -1 makes a batch fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def attribute_prepared(self, patches, taus):  # noqa: ANN001, ANN201
        self.batches.append([int(p) for p in patches])
        if any(int(p) == -1 for p in patches):
            raise RuntimeError("poisoned")
        return [(int(p), t) for p, t in zip(patches, taus)]


def _submit_together(b: Batcher, jobs: list[tuple[list[int], float | None]]) -> list[object]:
    """Submit ``jobs`` from as many threads, each "decoding" (entered) before any submits."""
    start = threading.Barrier(len(jobs))

    def one(job: tuple[list[int], float | None]) -> object:
        b.enter()
        start.wait()
        try:
            return b.submit(*job, leave=True)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def test_batcher_collects_concurrent_groups_with_their_own_tau() -> None:
    stub = _Stub()
    b = Batcher(stub, window=1.0, max_batch=64)  # a long window: all four arrive within it
    jobs = [([10 * i + k for k in range(i + 1)], float(i)) for i in range(4)]
    got = _submit_together(b, jobs)
    b.close()
    assert got == [[(p, t) for p in ps] for ps, t in jobs]  # each its own rows, its own tau
    assert len(stub.batches) == 1 and sorted(stub.batches[0]) == sorted(p for ps, _ in jobs for p in ps)


def test_batcher_max_batch_never_splits_a_group() -> None:
    stub = _Stub()
    b = Batcher(stub, window=1.0, max_batch=3)
    jobs = [([10 * i, 10 * i + 1], None) for i in range(5)]
    got = _submit_together(b, jobs)
    b.close()
    assert got == [[(p, None) for p in ps] for ps, _ in jobs]
    assert all(len(x) == 2 for x in stub.batches)  # 2 + 2 > 3: one group per batch, none split
    b = Batcher(stub, window=0.0, max_batch=1)
    assert b.submit([1, 2, 3], None) == [(1, None), (2, None), (3, None)]  # a group larger than max_batch
    b.close()


def test_batcher_failure_reaches_only_the_culprit() -> None:
    stub = _Stub()
    b = Batcher(stub, window=1.0, max_batch=64)
    got = _submit_together(b, [([1, 2], None), ([-1], None), ([3], 0.5)])
    b.close()
    assert got[0] == [(1, None), (2, None)] and got[2] == [(3, 0.5)]
    assert isinstance(got[1], RuntimeError) and "poisoned" in str(got[1])
    assert stub.batches[0] and len(stub.batches) == 4  # the batch, then each group alone


def test_batcher_waits_only_for_requests_on_their_way_and_at_most_the_window() -> None:
    stub = _Stub()
    b = Batcher(stub, window=5.0, max_batch=64)
    t0 = time.monotonic()
    assert b.submit([7], None) == [(7, None)]
    assert time.monotonic() - t0 < 2.0  # nobody else decoding: no wait at all (the window is 5 s)
    b.close()
    b = Batcher(stub, window=0.3, max_batch=64)
    b.enter()  # another request is decoding and never submits
    t0 = time.monotonic()
    assert b.submit([8], None) == [(8, None)]
    elapsed = time.monotonic() - t0
    b.leave()
    b.close()
    assert 0.29 <= elapsed < 0.3 + 2.0  # it waited for company up to the window, then went
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(stub, max_batch=0)
    with pytest.raises(ValueError, match="window"):
        Batcher(stub, window=-1)


# --- the HTTP service: concurrent requests == sequential ones ------------------------------
def _post(url: str, name: str, data: bytes, tau: float | None = None) -> httpx.Response:
    params = {} if tau is None else {"tau": tau}
    return httpx.post(f"{url}/v1/attribute", files=[("files", (name, data, "image/png"))], params=params,
                      timeout=TIMEOUT)


def test_concurrent_requests_give_the_sequential_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import osma.server

    real = osma.server._decode_upload

    def slow(data: bytes, max_pixels: int) -> np.ndarray:
        time.sleep(0.05)  # decodes overlap, so that groups meet in the batcher
        return real(data, max_pixels)

    monkeypatch.setattr(osma.server, "_decode_upload", slow)
    fake = make_fake()
    fake.tau = -3.0
    names = ["red", "green", "blue", "yellow"] * 3
    bodies = [png_bytes(colour_image(n, 70 + i)) for i, n in enumerate(names)]
    taus = [None if i % 3 else -1e9 for i in range(len(names))]
    # sequential, batching off
    app = create_app(Model(fake), max_upload_mb=0.05, max_pixels=100 * 100, max_batch=1, batch_window_ms=0)
    with running(app, free_port()) as port:
        want = [_post(f"http://127.0.0.1:{port}", f"{i}.png", b, t).json() for i, (b, t) in
                enumerate(zip(bodies, taus))]
    # concurrent, batched (a long window so that the batches really hold several requests);
    # one corrupt upload among them is refused alone
    app = create_app(Model(fake), max_upload_mb=0.05, max_pixels=100 * 100, max_batch=64, batch_window_ms=300,
                     max_concurrent_decodes=4)
    with running(app, free_port()) as port:
        url = f"http://127.0.0.1:{port}"
        start = threading.Barrier(len(names) + 1)

        def one(i: int) -> httpx.Response:
            start.wait()
            if i == len(names):
                return _post(url, "cut.png", bodies[0][: len(bodies[0]) // 2])
            return _post(url, f"{i}.png", bodies[i], taus[i])

        with ThreadPoolExecutor(len(names) + 1) as pool:
            got = list(pool.map(one, range(len(names) + 1)))
        sizes = list(app.state.batcher.batch_sizes)
    assert got[-1].status_code == 422 and "cut.png" in got[-1].json()["detail"]
    assert [r.status_code for r in got[:-1]] == [200] * len(names)
    assert [r.json() for r in got[:-1]] == want  # byte-for-byte the same answers
    assert sum(sizes) == len(names) and max(sizes) > 1, sizes  # they were batched


# --- precision ----------------------------------------------------------------------------
def test_auto_precision_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not prec.native_bf16("cpu")
    assert prec.resolve_precision("auto", "softmax", "cpu") == "fp32"
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert prec.native_bf16("cpu")
    assert prec.resolve_precision("auto", "softmax", "cpu") == "fp32"  # native, but not measured
    monkeypatch.setitem(prec.BF16_MEASURED, "cpu", frozenset({"softmax"}))
    assert prec.resolve_precision("auto", "softmax", "cpu") == "bf16"
    assert prec.resolve_precision("auto", "pose", "cpu") == "fp32"  # measured for another method only
    assert prec.resolve_precision(None, "softmax", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert prec.resolve_precision("auto", "softmax", "cpu") == "bf16"
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset())
    assert prec.resolve_precision("auto", "softmax", "cpu") == "fp32"  # measured, but not native here
    assert prec.resolve_precision("bf16", "pose", "cpu") == "bf16"  # explicit: always honoured
    assert prec.resolve_precision("FP32", "pose", "cpu") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        prec.resolve_precision("fp16", "pose", "cpu")
    assert prec.BF16_MEASURED == {"cpu": frozenset({"softmax"}), "cuda": frozenset()}


@pytest.fixture(scope="module")
def micro_model(micro_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osma.methods import train

    out = tmp_path_factory.mktemp("speed_softmax")
    train(micro_zoo, "split1", "softmax", out, epochs=2, crop=32, device="cpu", seed=0, progress=False,
          workers=0, lr=3e-3)
    return out


def test_bf16_predicts_like_fp32_on_micro(micro_model: Path, micro_zoo: Path) -> None:
    from osma.data import load_split

    sp = load_split(micro_zoo, "split1")
    paths = [str(s.path) for s in sp.test] + [str(s.path) for g in sp.test_out.values() for s in g]
    m32 = osma.load(micro_model, device="cpu", precision="fp32")
    m16 = osma.load(micro_model, device="cpu", precision="bf16")
    assert (m32.precision, m16.precision) == ("fp32", "bf16")
    e32, _, _ = m32.embed(paths)
    e16, _, _ = m16.embed(paths)
    assert e16.dtype == np.float32  # cast back before scoring
    assert not np.array_equal(e32, e16)  # bf16 really ran
    cos = (e32 * e16).sum(1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e16, axis=1))
    assert cos.min() > 0.99, cos.min()
    r32 = m32.attribute(paths, tau=-1.0)
    r16 = m16.attribute(paths, tau=-1.0)
    agree = np.mean([a.source == b.source for a, b in zip(r32, r16)])
    assert agree >= 0.95, agree
    s32, s16 = np.array([r.score for r in r32]), np.array([r.score for r in r16])
    assert np.abs(s32 - s16).max() < 0.05, np.abs(s32 - s16).max()


def test_prepared_batch_rows_match_single_rows(micro_model: Path, micro_zoo: Path) -> None:
    """The server's path (prepare, one batch) against ``attribute`` one image at a time."""
    from osma.data import load_split
    from osma.images import load_image

    sp = load_split(micro_zoo, "split1")
    m = osma.load(micro_model, device="cpu", precision="fp32")
    imgs = [load_image(s.path) for s in sp.test[:12]]
    batched = m.attribute_prepared([m.prepare(a) for a in imgs], [None, -1e9] * 6)
    for a, r, t in zip(imgs, batched, [None, -1e9] * 6):
        alone = m.attribute(a, tau=t)[0]
        assert (r.source, r.nearest, r.threshold) == (alone.source, alone.nearest, alone.threshold)
        assert r.score == pytest.approx(alone.score, abs=1e-5)


def test_precision_options_on_the_commands(micro_model: Path, micro_zoo: Path, tmp_path: Path) -> None:
    from osma.cli import app

    runner = CliRunner()
    images = micro_zoo.parent / "dataset"
    one = next(p for p in sorted(images.rglob("*.png")))
    r = runner.invoke(app, ["attribute", str(micro_model), str(one), "--precision", "bf16", "--tau", "-1"])
    assert r.exit_code == 0, r.output
    assert "bf16" in r.output
    r = runner.invoke(app, ["attribute", str(micro_model), str(one), "--precision", "fp16"])
    assert r.exit_code == 2 and "fp16" in r.output
    r = runner.invoke(app, ["evaluate", str(micro_model), "--data", str(micro_zoo), "--split", "split1",
                            "--out", str(tmp_path / "ev"), "--no-plots", "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["precision"] == "bf16"
    r = runner.invoke(app, ["serve", "--help"])
    assert "--precision" in r.output and "--batch-window-ms" in r.output and "--max-batch" in r.output


def test_pose_reuses_f_x_without_changing_l_a() -> None:
    """POSE's step computes f(x) once for both of its steps (issue 17): L_A's terms given
    that f(x) are the terms computed from scratch, in train mode (BatchNorm on batch statistics)."""
    import torch

    from osma.methods import METHODS

    torch.manual_seed(0)
    # without the dropout on the embeddings: a fresh f(x) would draw another dropout mask
    m = METHODS["pose"](["a", "b", "c"], preprocess={"crop": 16},
                        options={"width": 0.25, "embed_dim": 8, "dropout_features": False}, device="cpu")
    m._grow(1)
    m.train_mode(True)
    aug = m._new_augnet()
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    f_x = m.features(x)  # with the network's graph, as train_step computes it
    for p in [*m.backbone.parameters(), *m.head.parameters()]:
        p.requires_grad_(False)  # step 1: the network frozen
    grads = []
    for f in (f_x, None):
        aug.zero_grad(set_to_none=True)
        terms = m.augnet_terms(aug, x, m.augnets[0], f_x=f)
        sum(terms.values()).backward()
        grads.append([p.grad.clone() for p in aug.parameters()])
        if f is not None:
            given = terms
        else:
            fresh = terms
    assert set(given) == set(fresh) == {"mse", "close_known", "div"}
    for k in given:
        assert torch.equal(given[k], fresh[k]), k
    assert all(torch.equal(a, b) for a, b in zip(*grads))  # the same pull on A_t
    assert f_x.grad_fn is not None and all(p.grad is None for p in m.backbone.parameters())


def _pose_one_step(forwards: str, aug_lr: float) -> tuple[list, list]:
    """One POSE training step (variant full, one earlier model) from the same start;
    the network's and A_t's parameters afterwards."""
    import torch

    from osma.methods import METHODS
    from osma.trainer import StepContext

    torch.manual_seed(0)
    # deterministic steps: no dropout anywhere, so both paths see the same numbers
    m = METHODS["pose"](["a", "b", "c"], preprocess={"crop": 16},
                        options={"width": 0.25, "embed_dim": 8, "dropout": 0.0, "dropout_features": False,
                                 "aug_lr": aug_lr, "forwards": forwards}, device="cpu")
    m._grow(1)  # one earlier model: every random choice of A_j is the same one
    m.train_mode(True)
    opts = m.optimizers()
    ctx = StepContext(1, opts, m.schedulers(opts))
    m.begin_epoch(ctx)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = m.train_step(ctx, x, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert {"loss_mse", "loss_close_known", "loss_div", "loss_cls", "loss_metric", "loss_metric_pre"} <= set(losses)
    net = [p.detach().clone() for p in [*m.backbone.parameters(), *m.head.parameters()]]
    return net, [p.detach().clone() for p in ctx.state["aug"].parameters()]


def test_pose_shared_forwards_take_the_separate_steps() -> None:
    """``forwards=shared`` (3 network passes a step instead of 5, issue 17) moves A_t exactly
    as the official two-step order does (L_A sees the network before its step in both), and
    the network too when A_t does not move (aug_lr 0): its only difference is that the
    network's triplet sees A_t(x) from before A_t's update. ``concat`` batches the passes
    (BatchNorm statistics over all): it moves both, differently."""
    import torch

    for aug_lr in (1e-2, 0.0):
        sep_net, sep_aug = _pose_one_step("separate", aug_lr)
        sh_net, sh_aug = _pose_one_step("shared", aug_lr)
        for a, b in zip(sep_aug, sh_aug):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        same_net = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(sep_net, sh_net))
        assert same_net == (aug_lr == 0.0), aug_lr
    start_net, start_aug = _pose_one_step("separate", 0.0)  # aug_lr 0: A_t unchanged = its start
    cat_net, cat_aug = _pose_one_step("concat", 1e-2)
    assert not all(torch.equal(a, b) for a, b in zip(start_aug, cat_aug))
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(sep_net, cat_net))


def test_pose_forwards_default_and_saved_runs(tmp_path: Path) -> None:
    """New POSE models take the shared step; a bundle or checkpoint saved before the option
    existed keeps the separate step it was trained with (Options.saved_defaults), for
    loading and for resuming."""
    from osma.methods import METHODS, _resume_config
    from osma.methods.pose import PoseOptions

    assert PoseOptions().forwards == "shared"
    assert PoseOptions.from_saved({}).forwards == "separate"
    assert PoseOptions.from_saved({"forwards": "concat"}).forwards == "concat"
    assert METHODS["softmax"].Options.from_saved({}) == METHODS["softmax"].Options()  # nothing listed: defaults
    m = METHODS["pose"](["a", "b"], preprocess={"crop": 16}, options={"width": 0.25, "embed_dim": 8}, device="cpu")
    doc = m.document()
    assert doc["options"]["forwards"] == "shared"
    del doc["options"]["forwards"]  # as saved before issue 17
    assert METHODS["pose"].from_document(doc, device="cpu").opts.forwards == "separate"
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"method": "pose", "classes": ["a", "b"], "preprocess": doc["preprocess"],
                                 "options": doc["options"], "score": {"name": "msp"}}))
    assert _resume_config(saved, "pose")["forwards"] == "separate"


def test_precision_bench_limit_keeps_order_and_unseen_real(micro_zoo: Path) -> None:
    """bench/precision.py --limit: at most N of every list, a random subset in list order;
    the unseen real images kept are those of the kept test images."""
    from osma.data import load_split

    bench = load_bench("precision")
    sp = load_split(micro_zoo, "split1")
    lim = bench.limit_split(sp, 5, seed=0)
    for full, part in [(sp.val, lim.val), (sp.test, lim.test), *[(sp.test_out[g], lim.test_out[g]) for g in sp.test_out]]:
        assert len(part) == min(5, len(full))
        idx = [full.index(s) for s in part]
        assert idx == sorted(idx)  # list order kept
    assert [sp.test_out["arch"].index(s) for s in lim.test_out["arch"]] != [0, 1, 2, 3, 4]  # drawn, not the first N
    assert all(s in lim.test for s in lim.unseen_real)
    assert lim.unseen_real == [s for s in sp.unseen_real if s in lim.test]
    assert bench.limit_split(sp, None).test == sp.test


def test_throughput_load_generator_posts_valid_requests(tmp_path: Path) -> None:
    """bench/throughput.py's plain-socket load generator: its hand-built multipart request is
    accepted (200 with the image's row) and each answer is read whole by its Content-Length,
    so the keep-alive connection stays in step (an error or a miscount would show as errors
    or as a hang)."""
    bench = load_bench("throughput")
    png = tmp_path / "x.png"
    png.write_bytes(png_bytes(colour_image("red", 3)))
    app = create_app(Model(make_fake()))
    with running(app, free_port()) as port:
        for client in ("raw", "httpx"):
            (r,) = bench.sec_loadgen({"port": port, "png": str(png), "clients": 3, "seconds": 0.3, "client": client})
            assert r["errors"] == 0 and r["requests"] >= 3 and r["client"] == client, r
            assert r["client_cpu_ms"] > 0 and r["p50_ms"] <= r["p99_ms"]


def test_server_gc_window_counts_collections_inside_the_run(tmp_path: Path) -> None:
    bench = load_bench("server_gc")
    f = tmp_path / "gc.jsonl"
    f.write_text("\n".join(json.dumps(d) for d in [
        {"objects": 10}, {"gen": 2, "end": 5.0, "s": 0.25}, {"gen": 0, "end": 10.0, "s": 0.001},
        {"gen": 2, "end": 11.0, "s": 0.01}, {"gen": 2, "end": 12.5, "s": 0.3}, {"gen": 0, "end": 11.5, "s": 0.003}]))
    got = bench._gc_window(f, 10.0, 12.0)
    assert got == {0: (2, pytest.approx(4.0), pytest.approx(3.0)), 2: (1, pytest.approx(10.0), pytest.approx(10.0))}
