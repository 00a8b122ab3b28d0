"""Trainer: the step on a tiny synthetic set, exact resume, crash-safe checkpoints, non-finite stop, schedules,
terms that are off are not computed, CLI outputs."""
import json
import os

import pytest
import torch

from toco_fast import checkpoint as ckpt
from toco_fast import schedule, train_step as step_module
from toco_fast import train as train_module
from toco_fast.config import apply_overrides, load_config, to_dict
from toco_fast.train_step import TrainBatch, train_step

NUM_CLASSES = 4
SIZE = 64


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from toco_fast.data.synthetic import generate

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate(root, num_train=12, num_val=3, num_classes=NUM_CLASSES, size=SIZE, seed=0)
    return root


def tiny_cfg(root, *overrides):
    """A config small enough for a CPU test: a 3-block 32-wide ViT on 64 px crops."""
    return apply_overrides(load_config("synthetic_tiny"), [
        "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}",
        f"model.num_classes={NUM_CLASSES}", "model.proj_dim=64", "model.decoder_channels=32",
        "model.proj_hidden_dim=64", "model.proj_bottleneck_dim=32",
        f"data.root={root}", "data.crop_size=64", "data.local_crop_size=32", "data.num_local_crops=2",
        "data.batch_size=2", "data.num_workers=0",
        "cam.scales=[1.0, 0.5]", "eval.crop_size=64", "eval.max_images=2", "eval.num_workers=0",
        "optim.warmup_iters=2", "loss.seg_start_iter=1",
        "train.max_iters=6", "train.log_iters=2", "train.eval_iters=3", "train.ckpt_iters=3",
        "train.keep_checkpoints=5", *overrides])


def fixed_batch(cfg):
    """One collated training batch from the synthetic set."""
    from toco_fast.data import TrainDataset, ToCoViews, open_source

    dataset = TrainDataset(open_source("synthetic", cfg.data.root, "train"),
                           ToCoViews(crop_size=cfg.data.crop_size, scale_range=(0.9, 1.1)), seed=0)
    items = [dataset[(0, i)] for i in range(cfg.data.batch_size)]
    return TrainBatch(images=torch.stack([it["image"] for it in items]),
                      cls_labels=torch.stack([it["cls_label"] for it in items]).float(),
                      img_box=torch.stack([it["img_box"] for it in items]),
                      view2=torch.stack([it["view2"] for it in items]),
                      local_source=torch.stack([it["local_source"] for it in items]))


# ----------------------------------------------------------------------------------------------- the step


def test_overfit_fixed_batch(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "optim.lr=1e-3")
    model = ckpt.build_model(to_dict(cfg)["model"]).train()
    optimizer, sched = train_module.build_optimizer(model, cfg)
    batch = fixed_batch(cfg)
    losses = []
    for n_iter in range(20):
        sched.apply(100)  # past the warm-up
        torch.manual_seed(0)  # the same local crops every step: a truly fixed batch
        loss, terms = train_step(model, batch, cfg=cfg, n_iter=n_iter)
        assert set(terms) == {"cls", "cls_aux", "ptc", "ctc", "seg"}  # reg: no extension in CI
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def _spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.fixture
def spied(monkeypatch):
    """Record calls of everything a loss term needs."""
    from toco_fast.cam import labels, multiscale, refine
    from toco_fast.losses import ctc, seg
    from toco_fast.ops import ptc

    calls = []
    for module, name in ((multiscale, "multi_scale_cam"), (labels, "crop_from_roi"), (labels, "cam_to_roi_mask"),
                         (labels, "token_labels_from_cam"), (refine, "refine_cams_with_bkg"),
                         (ctc, "ctc_loss"), (seg, "seg_loss"), (ptc, "ptc_loss")):
        _spy(monkeypatch, module, name, calls)
    return calls


@pytest.mark.parametrize("overrides, n_iter, expected_terms, expected_calls", [
    # cls-only baseline before the seg start: no CAM, no crops, no PAR, no contrast
    (["loss.w_ptc=0", "loss.w_ctc=0", "loss.seg_start_iter=5"], 5, {"cls", "cls_aux"}, set()),
    # baseline after the seg start: CAM + PAR + seg, still no contrast and no local crops
    (["loss.w_ptc=0", "loss.w_ctc=0", "loss.seg_start_iter=5"], 6, {"cls", "cls_aux", "seg"},
     {"multi_scale_cam", "refine_cams_with_bkg", "seg_loss"}),
    # COCO-like: contrast off until its start, seg on
    (["loss.contrast_start_iter=10", "loss.seg_start_iter=0"], 10, {"cls", "cls_aux", "seg"},
     {"multi_scale_cam", "refine_cams_with_bkg", "seg_loss"}),
    # everything on except seg (weight 0)
    (["loss.w_seg=0", "loss.seg_start_iter=-1"], 0, {"cls", "cls_aux", "ptc", "ctc"},
     {"multi_scale_cam", "cam_to_roi_mask", "crop_from_roi", "ctc_loss", "token_labels_from_cam", "ptc_loss"}),
])
def test_terms_that_are_off_are_not_computed(synthetic_root, spied, overrides, n_iter, expected_terms,
                                             expected_calls):
    cfg = tiny_cfg(synthetic_root, *overrides)
    model = ckpt.build_model(to_dict(cfg)["model"]).train()
    seen_views = []
    real_forward = model.forward

    def forward(images, view2=None, local_crops=None, cam_only=False):
        if not cam_only:
            seen_views.append((view2 is not None, local_crops is not None))
        return real_forward(images, view2=view2, local_crops=local_crops, cam_only=cam_only)

    model.forward = forward
    teacher_before = [p.clone() for p in model.proj_head_t.parameters()]
    with torch.no_grad():
        for p in model.proj_head.parameters():
            p.add_(0.1)
    _, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=n_iter)
    assert set(terms) == expected_terms
    assert set(spied) == expected_calls
    contrast = "ctc" in expected_terms
    assert seen_views == [(contrast, contrast)]
    teacher_moved = any(not torch.equal(a, b) for a, b in zip(teacher_before, model.proj_head_t.parameters()))
    assert teacher_moved == contrast  # the EMA runs only with the CTC term


def test_reg_term_is_off_without_extension(synthetic_root, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_extension(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "toco_fast" and fromlist and "_C" in fromlist:
            raise ImportError("cannot import name '_C'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_extension)
    messages = []
    logger = train_module.get_logger()
    monkeypatch.setattr(logger, "warning", messages.append)
    assert train_module.build_energy(tiny_cfg(synthetic_root), logger) is None
    assert len(messages) == 1 and "reg loss is OFF" in messages[0] and "toco_fast._C" in messages[0]
    assert "pip install" in messages[0]
    assert train_module.build_energy(tiny_cfg(synthetic_root, "loss.w_reg=0"), logger) is None
    assert len(messages) == 1  # weight 0: nothing to say


def test_reg_term_is_used_when_given(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_ptc=0", "loss.w_ctc=0")
    model = ckpt.build_model(to_dict(cfg)["model"]).train()
    calls = []

    def energy(images, seg_logits, labels, img_box):
        calls.append((tuple(images.shape), tuple(seg_logits.shape), tuple(labels.shape)))
        return (seg_logits.float() ** 2).mean()

    loss, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=0, energy=energy)
    assert set(terms) == {"cls", "cls_aux", "seg", "reg"}
    assert calls == [((2, 3, SIZE, SIZE), (2, NUM_CLASSES, SIZE, SIZE), (2, SIZE, SIZE))]
    expected = terms["cls"] + terms["cls_aux"] + 0.1 * terms["seg"] + 0.05 * terms["reg"]
    torch.testing.assert_close(loss.detach(), expected)


# ----------------------------------------------------------------------------------------------- schedules


class OfficialPolyWarmup:
    """The official PolyWarmupAdamW learning-rate rule (rulixiang/ToCo utils/optimizer.py), step by step."""

    def __init__(self, init_lrs, warmup_iter, max_iter, warmup_ratio, power):
        self.init_lrs, self.warmup_iter, self.max_iter = init_lrs, warmup_iter, max_iter
        self.warmup_ratio, self.power = warmup_ratio, power
        self.global_step = 0
        self.lrs = list(init_lrs)

    def step(self):
        if self.global_step < self.warmup_iter:
            mult = 1 - (1 - self.global_step / self.warmup_iter) * (1 - self.warmup_ratio)
            self.lrs = [lr * mult for lr in self.init_lrs]
        elif self.global_step < self.max_iter:
            mult = (1 - self.global_step / self.max_iter) ** self.power
            self.lrs = [lr * mult for lr in self.init_lrs]
        self.global_step += 1
        return self.lrs


@pytest.mark.parametrize("name", ["voc_vit_b", "coco_vit_b"])
def test_lr_schedule_matches_official(name):
    cfg = load_config(name)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": cfg.optim.lr},
                                   {"params": [params[1]], "lr": 10 * cfg.optim.lr}])
    ours = schedule.PolyWarmupSchedule(optimizer, warmup_iters=cfg.optim.warmup_iters,
                                       max_iters=cfg.train.max_iters, warmup_ratio=cfg.optim.warmup_ratio,
                                       power=cfg.optim.power)
    official = OfficialPolyWarmup([cfg.optim.lr, 10 * cfg.optim.lr], cfg.optim.warmup_iters, cfg.train.max_iters,
                                  cfg.optim.warmup_ratio, cfg.optim.power)
    key = {0, 1, 2, 749, 1499, 1500, 1501, 2000, cfg.train.max_iters // 2, cfg.train.max_iters - 1}
    for step in range(cfg.train.max_iters + 3):
        expected = official.step()
        if step in key or step >= cfg.train.max_iters:
            ours.apply(step)
            assert [g["lr"] for g in optimizer.param_groups] == expected, step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * (1 / cfg.train.max_iters) ** 0.9)


def test_lr_schedule_values():
    mult = schedule.poly_warmup_multiplier
    kw = dict(warmup_iters=1500, max_iters=20000, warmup_ratio=1e-6, power=0.9)
    assert mult(0, **kw) == pytest.approx(1e-6)
    assert mult(750, **kw) == pytest.approx(0.5 + 0.5e-6)
    assert mult(1500, **kw) == pytest.approx((1 - 1500 / 20000) ** 0.9)  # poly counts from 0: a drop at 1500
    with pytest.raises(ValueError, match="step"):
        mult(-1, **kw)


def test_loss_weight_schedules():
    voc = load_config("voc_vit_b").loss
    assert schedule.loss_weights(voc, 0) == {"cls": 1.0, "cls_aux": 1.0, "ptc": 0.2, "ctc": 0.5}
    assert schedule.loss_weights(voc, 2000) == schedule.loss_weights(voc, 0)  # official: n_iter <= 2000
    assert schedule.loss_weights(voc, 2001) == {"cls": 1.0, "cls_aux": 1.0, "ptc": 0.2, "ctc": 0.5, "seg": 0.1,
                                                "reg": 0.05}
    assert schedule.pseudo_label_cam(voc, 0) == "final"
    coco = load_config("coco_vit_b").loss
    assert schedule.loss_weights(coco, 8000) == {"cls": 1.0, "cls_aux": 1.0}
    assert schedule.loss_weights(coco, 8001) == {"cls": 1.0, "cls_aux": 1.0, "seg": 0.1, "reg": 0.05}
    assert schedule.loss_weights(coco, 12000) == schedule.loss_weights(coco, 8001)
    assert set(schedule.loss_weights(coco, 12001)) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"}
    assert [schedule.pseudo_label_cam(coco, n) for n in (8001, 12000, 12001)] == ["aux", "aux", "final"]


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert train_module.resolve_precision("fp16", cpu).dtype == torch.bfloat16
    assert not train_module.resolve_precision("fp16", cpu).scaler
    assert "bf16" in train_module.resolve_precision("fp16", cpu).note
    assert train_module.resolve_precision("fp32", cpu).dtype is None
    cuda = torch.device("cuda", 0)
    assert train_module.resolve_precision("fp16", cuda).scaler
    assert train_module.resolve_precision("bf16", cuda).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- the loop


def _params(run_dir):
    return ckpt.load_checkpoint(run_dir)


def test_resume_is_bitwise_exact(synthetic_root, tmp_path, monkeypatch):
    full = train_module.train(tiny_cfg(synthetic_root), run_dir=str(tmp_path / "full"))
    assert full.iteration == 6 and full.eval_results is not None

    # The same run, killed (Ctrl-C) in iteration 4, right after its first checkpoint, then resumed from the CLI.
    real_step = step_module.train_step

    def interrupted(*args, n_iter, **kwargs):
        if n_iter == 3:
            raise KeyboardInterrupt
        return real_step(*args, n_iter=n_iter, **kwargs)

    monkeypatch.setattr(step_module, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny_cfg(synthetic_root), run_dir=str(tmp_path / "split"))
    monkeypatch.undo()
    resumed_cfg, resume = train_module.config_from_args(
        train_module.build_parser().parse_args(["--resume", str(tmp_path / "split")]))
    assert resume.endswith("iter_0000003.pt")
    train_module.train(resumed_cfg, resume=resume)

    a, b = _params(tmp_path / "full"), _params(tmp_path / "split")
    assert a["iteration"] == b["iteration"] == 6
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for key in va:
            assert torch.equal(torch.as_tensor(va[key]), torch.as_tensor(vb[key])), (ka, key)

    # metrics of the resumed run: one consistent history (log at 2, 4, 6; eval at 3, 6)
    with open(tmp_path / "split" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [(r["kind"], r["iteration"]) for r in records] == [
        ("train", 2), ("eval", 3), ("train", 4), ("train", 6), ("eval", 6)]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    with open(tmp_path / "full" / "metrics.jsonl") as f:
        full_losses = [json.loads(line)["loss"] for line in f if '"train"' in line]
    assert train_losses == full_losses

    # Extending a finished run: the schedule follows the new length; --config cannot be mixed with --resume.
    parser = train_module.build_parser()
    longer, resume = train_module.config_from_args(parser.parse_args(["--resume", str(tmp_path / "split"),
                                                                      "--max-iters", "7"]))
    assert train_module.train(longer, resume=resume).iteration == 7
    state = ckpt.load_checkpoint(tmp_path / "split")
    expected = state["schedule"]["base_lrs"][0] * schedule.poly_warmup_multiplier(
        6, warmup_iters=2, max_iters=7, warmup_ratio=1e-6, power=0.9)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    assert train_module.main(["--resume", str(tmp_path / "split"), "--config", "voc_vit_b"]) == 2


def test_crash_while_writing_checkpoint_keeps_last_good_one(synthetic_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(synthetic_root, "train.eval_iters=100", "eval.enabled=false")
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint (iteration 6) dies half written
            real_save(obj, f, *args, **kwargs)
            f.truncate(f.tell() // 3)
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="disk full"):
        train_module.train(cfg, run_dir=str(tmp_path))
    monkeypatch.undo()
    files = os.listdir(tmp_path / "checkpoints")
    assert files == ["iter_0000003.pt"]
    state = ckpt.load_checkpoint(tmp_path)
    assert state["iteration"] == 3
    resumed = train_module.train(ckpt_cfg(state), resume=str(tmp_path))
    assert resumed.iteration == 6


def ckpt_cfg(state):
    from toco_fast.config import from_dict

    return from_dict(state["config"])


def test_non_finite_loss_stops_and_names_the_term(synthetic_root, tmp_path, monkeypatch):
    from toco_fast.losses import ctc

    real = ctc.ctc_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setattr(ctc, "ctc_loss", poisoned)
    cfg = tiny_cfg(synthetic_root, "eval.enabled=false", "train.ckpt_iters=2")
    with pytest.raises(train_module.NonFiniteLossError) as info:
        train_module.train(cfg, run_dir=str(tmp_path))
    assert info.value.iteration == 5 and info.value.terms == ["ctc"]
    assert "iteration 5" in str(info.value) and "ctc=nan" in str(info.value)
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]  # the last good checkpoint survives
    with open(tmp_path / "train.log") as f:
        log = f.read()
    assert "iter 4/6" in log and "non-finite loss at iteration 5: term ctc=nan" in log


def test_cli_writes_run_dir_and_refuses_to_clobber(synthetic_root, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    from toco_fast.config import save_config

    save_config(tiny_cfg(synthetic_root, "train.max_iters=2", "train.eval_iters=2", "train.ckpt_iters=2"),
                str(cfg_path))
    run_dir = tmp_path / "run"
    assert train_module.main(["--config", str(cfg_path), "--run-dir", str(run_dir), "--bf16"]) == 0
    for name in ("config.yaml", "train.log", "metrics.jsonl", "metrics.csv", "checkpoints/iter_0000002.pt"):
        assert os.path.isfile(run_dir / name), name
    saved = load_config(str(run_dir / "config.yaml"))
    assert saved.train.precision == "bf16" and saved.train.max_iters == 2
    log = (run_dir / "train.log").read_text()
    assert "bf16 autocast" in log and "Seg_Pred" in log and "mIoU" in log
    with open(run_dir / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    assert {"kind", "iteration", "loss", "cls", "lr", "CAM_mIoU", "aux_CAM_mIoU", "Seg_Pred_mIoU"} <= set(header)
    # a second fresh run into the same directory would mix two runs: refused
    with pytest.raises(Exception, match="already holds checkpoints"):
        train_module.train(saved, run_dir=str(run_dir))
    assert train_module.main(["--config", str(cfg_path), "--set", "train.nope=1"]) == 2


def test_check_data(synthetic_root, tmp_path, capsys):
    import shutil

    assert train_module.main(["--config", "synthetic_tiny", "--set", f"data.root={synthetic_root}",
                              "--check-data"]) == 0
    assert "OK" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    with open(broken / "JPEGImages" / "val_000001.png", "wb") as f:
        f.write(b"not a png")
    assert train_module.main(["--config", "synthetic_tiny", "--set", f"data.root={broken}", "--check-data"]) == 1
    assert "val_000001" in capsys.readouterr().out


def test_real_energy_term_when_built(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_ptc=0", "loss.w_ctc=0")
    energy = train_module.build_energy(cfg, train_module.get_logger())
    if energy is None:
        pytest.skip("toco_fast._C is not built")
    model = ckpt.build_model(to_dict(cfg)["model"]).train()
    loss, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=0, energy=energy)
    assert set(terms) == {"cls", "cls_aux", "seg", "reg"} and torch.isfinite(terms["reg"])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.decoder.parameters())


def test_metrics_writer_grows_columns_and_truncates_on_resume(tmp_path):
    from toco_fast.logging_utils import MetricsWriter

    writer = MetricsWriter(str(tmp_path))
    writer.write({"kind": "train", "iteration": 2, "loss": 1.5})
    writer.write({"kind": "train", "iteration": 4, "loss": 1.25, "seg": 0.5})  # a new column
    writer.write({"kind": "eval", "iteration": 4, "CAM_mIoU": 0.3})
    writer.write({"kind": "train", "iteration": 6, "loss": float("nan")})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "kind,iteration,loss,seg,CAM_mIoU" and len(lines) == 5
    assert lines[1] == "train,2,1.5,,"

    resumed = MetricsWriter(str(tmp_path), keep_until=4)  # the run resumes from its iteration-4 checkpoint
    assert [r["iteration"] for r in resumed.records] == [2, 4, 4]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4


def test_progress_bar_line():
    import io

    from toco_fast.logging_utils import ProgressBar, Throughput, format_duration

    stream = io.StringIO()
    bar = ProgressBar(100, stream=stream, enabled=True, min_interval=0.0)
    meter = Throughput(100, start_iter=0)
    meter.add(25, 200, 10.0)
    bar.update(25, {"cls": 0.5, "lr": 6e-5}, meter.images_per_second(), meter.eta_seconds())
    text = stream.getvalue()
    assert "25/100" in text and "cls 0.5" in text and "lr 6.000e-05" in text and "20.00 img/s" in text
    assert "ETA 00:30" in text
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "--:--"
    assert ProgressBar(10, stream=io.StringIO()).enabled is False  # not a terminal: silent


def test_demo_compare_prints_both_tables(tmp_path, capsys):
    from toco_fast import demo

    overrides = []
    for item in ("model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}",
                 f"model.num_classes={NUM_CLASSES}", "model.proj_dim=64", "model.decoder_channels=32",
                 "model.proj_hidden_dim=64", "model.proj_bottleneck_dim=32", "data.synthetic.num_train=8",
                 "data.synthetic.num_val=2", f"data.synthetic.size={SIZE}", "data.crop_size=64",
                 "data.local_crop_size=32", "data.num_local_crops=2", "data.batch_size=2", "cam.scales=[1.0]",
                 "eval.crop_size=64", "optim.warmup_iters=1", "loss.seg_start_iter=0", "train.max_iters=2",
                 "train.log_iters=1", "train.ckpt_iters=2"):
        overrides += ["--set", item]
    data_dir, out = tmp_path / "data", tmp_path / "out"
    assert demo.main(["--compare", "--data-dir", str(data_dir), "--out", str(out), *overrides]) == 0
    text = capsys.readouterr().out
    assert "[demo] ToCo:" in text and "[demo] cls-only baseline" in text
    assert text.count("| mIoU") == 2 and "Seg_Pred" in text and "| toco |" in text and "| baseline |" in text
    toco = json.loads((out / "toco" / "results.json").read_text())
    base = json.loads((out / "baseline" / "results.json").read_text())
    assert set(toco["miou"]) == {"CAM", "aux_CAM", "Seg_Pred"}
    assert (toco["loss_weights"]["ptc"], base["loss_weights"]["ptc"], base["loss_weights"]["ctc"]) == (0.2, 0, 0)
    assert len(toco["iou"]["CAM"]) == NUM_CLASSES
