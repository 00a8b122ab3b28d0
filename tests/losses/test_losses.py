"""CTC and segmentation losses against literal float64 ports of the official formulas (explicit loops)."""
import math

import pytest
import torch
import torch.nn.functional as F

from tolerances import assert_close_fp32
from toco_fast.losses.ctc import ctc_loss
from toco_fast.losses.seg import seg_loss


# ----------------------------------------------------------------------------------------------------------------
# Oracles: the official formulas, evaluated literally (exp of raw logits, one image and one positive at a time).
# ----------------------------------------------------------------------------------------------------------------
def official_ctc(student, teacher, flags, temp):
    batch = flags.shape[0]
    ncrops = student.shape[0] // batch
    dim = student.shape[1]
    total = 0.0
    for i in range(batch):
        views = torch.stack([student[v * batch + i] for v in range(ncrops)])  # [ncrops, P]
        teachers = torch.stack([teacher[k * batch + i] for k in range(2)])  # [2, P]
        assert views.shape == (ncrops, dim)
        sims = torch.exp(teachers @ views.T / temp)  # [2, ncrops]
        negatives = [v for v in range(ncrops) if flags[i, v] == 0]
        positives = [v for v in range(ncrops) if flags[i, v] != 0]
        neg_sum = sims[:, negatives].sum(dim=1)
        loss = torch.zeros(2, dtype=sims.dtype)
        for v in positives:
            loss = loss - torch.log(sims[:, v] / (sims[:, v] + neg_sum + 1e-4))
        loss = loss - torch.log(1 / (1 + neg_sum + 1e-4))  # the for/else branch, always taken
        total = total + loss.sum() / 2 / (len(positives) + 1e-4)
    return total / batch


def official_seg(logits, labels, ignore_index=255):
    bg = labels.clone()
    bg[labels != 0] = ignore_index
    fg = labels.clone()
    fg[labels == 0] = ignore_index
    bg_loss = F.cross_entropy(logits, bg, ignore_index=ignore_index)
    fg_loss = F.cross_entropy(logits, fg, ignore_index=ignore_index)
    return (bg_loss + fg_loss) * 0.5


def random_flags(batch, ncrops, generator=None, p_pos=0.5):
    flags = (torch.rand(batch, ncrops, generator=generator) < p_pos).float()
    flags[:, :2] = 1
    return flags


def ctc_inputs(batch, ncrops, dim, dtype=torch.float64, scale=1.0):
    student = (torch.randn(ncrops * batch, dim, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    teacher = (torch.randn(2 * batch, dim, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    return student, teacher


def value_and_grads(fn, *inputs, grad_out):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [x for x in inputs if x.requires_grad], grad_out)
    return out, grads


# ----------------------------------------------------------------------------------------------------------------
# CTC
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,ncrops,dim,temp", [(1, 2, 5, 0.5), (2, 10, 16, 0.5), (3, 7, 9, 1.0), (5, 4, 3, 0.1)])
def test_ctc_matches_official_value_and_grad(batch, ncrops, dim, temp):
    student, teacher = ctc_inputs(batch, ncrops, dim, scale=0.5)
    flags = random_flags(batch, ncrops)
    grad_out = torch.randn((), dtype=torch.float64)
    ours, ours_grads = value_and_grads(lambda s, t: ctc_loss(s, t, flags, temp), student, teacher, grad_out=grad_out)
    ref, ref_grads = value_and_grads(lambda s, t: official_ctc(s, t, flags, temp), student, teacher,
                                     grad_out=grad_out)
    assert ours.dtype == torch.float64
    assert_close_fp32(ours, ref, rtol=1e-10, atol=1e-12, what="ctc value")
    for name, a, b in zip(("student", "teacher"), ours_grads, ref_grads):
        assert_close_fp32(a, b, rtol=1e-9, atol=1e-12, what=f"ctc grad {name}")


def test_ctc_fp32_matches_float64_oracle():
    batch, ncrops, dim = 2, 10, 32
    student, teacher = ctc_inputs(batch, ncrops, dim, dtype=torch.float32, scale=0.3)
    flags = random_flags(batch, ncrops)
    grad_out = torch.randn(())
    ours, ours_grads = value_and_grads(lambda s, t: ctc_loss(s, t, flags, 0.5), student, teacher, grad_out=grad_out)
    s64, t64 = (x.detach().double().requires_grad_() for x in (student, teacher))
    ref, ref_grads = value_and_grads(lambda s, t: official_ctc(s, t, flags, 0.5), s64, t64,
                                     grad_out=grad_out.double())
    assert ours.dtype == torch.float32
    assert_close_fp32(ours, ref, what="ctc fp32 value")
    for a, b in zip(ours_grads, ref_grads):
        assert_close_fp32(a, b, rtol=1e-4, atol=1e-6, what="ctc fp32 grad")


@pytest.mark.parametrize("case", ["all_positive", "no_positive_local", "no_positive_at_all"])
def test_ctc_flag_extremes(case):
    batch, ncrops, dim = 3, 6, 8
    student, teacher = ctc_inputs(batch, ncrops, dim)
    flags = torch.ones(batch, ncrops)
    if case == "no_positive_local":
        flags[:, 2:] = 0
    elif case == "no_positive_at_all":
        flags[:] = 0  # official divides the background term by 1e-4; we must agree, not crash
    grad_out = torch.randn((), dtype=torch.float64)
    ours, ours_grads = value_and_grads(lambda s, t: ctc_loss(s, t, flags), student, teacher, grad_out=grad_out)
    ref, ref_grads = value_and_grads(lambda s, t: official_ctc(s, t, flags, 0.5), student, teacher,
                                     grad_out=grad_out)
    assert_close_fp32(ours, ref, rtol=1e-10, atol=1e-12, what=case)
    for a, b in zip(ours_grads, ref_grads):
        assert torch.isfinite(a).all()
        assert_close_fp32(a, b, rtol=1e-9, atol=1e-10, what=f"{case} grad")


def test_ctc_identical_view_pair_and_else_term_counted():
    """One image, two global views, no local crop: check the closed form by hand."""
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    flags = torch.ones(1, 2)
    # No negatives: each positive pair gives -log(e^z / (e^z + 1e-4)); the else term gives log(1 + 1e-4).
    z = student @ teacher.T / 0.5  # symmetric here
    per_view = [sum(math.log1p(1e-4 * math.exp(-z[k, v].item())) for v in range(2)) + math.log1p(1e-4)
                for k in range(2)]
    expected = sum(per_view) / 2 / (2 + 1e-4)
    assert ctc_loss(student, teacher, flags).item() == pytest.approx(expected, rel=1e-12)


def test_ctc_gradcheck():
    batch, ncrops, dim = 2, 5, 4
    student, teacher = ctc_inputs(batch, ncrops, dim)
    flags = random_flags(batch, ncrops)
    assert torch.autograd.gradcheck(lambda s, t: ctc_loss(s, t, flags, 0.5), (student, teacher))


def test_ctc_fp16_large_logits_stay_finite():
    batch, ncrops, dim = 2, 10, 64
    generator = torch.Generator().manual_seed(3)
    direction = torch.randn(dim, generator=generator)
    direction = direction / direction.norm() * 5.0  # dot products around 25 -> exp(50) at temp 0.5
    student = (direction + 0.1 * torch.randn(ncrops * batch, dim, generator=generator)).half().requires_grad_()
    teacher = (direction + 0.1 * torch.randn(2 * batch, dim, generator=generator)).half().requires_grad_()
    flags = random_flags(batch, ncrops, generator)

    with torch.no_grad():
        literal_fp16 = official_ctc(student, teacher, flags, 0.5)
    assert not torch.isfinite(torch.as_tensor(literal_fp16)).all(), "the literal fp16 formula should overflow"

    loss = ctc_loss(student, teacher, flags, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()
    reference = official_ctc(student.detach().double(), teacher.detach().double(), flags, 0.5)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-5)


def test_ctc_fp32_beyond_exp_range_stays_finite():
    batch, ncrops, dim = 1, 4, 4
    student = torch.full((ncrops * batch, dim), 5.0)
    teacher = torch.full((2 * batch, dim), 5.0)  # dot = 100 -> exp(200) overflows fp32
    flags = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    assert not math.isfinite(official_ctc(student, teacher, flags, 0.5).item())
    ours = ctc_loss(student, teacher, flags, 0.5)
    reference = official_ctc(student.double(), teacher.double(), flags, 0.5)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("student_shape,teacher_shape,flags_shape,match", [
    ((20, 8), (4, 8), (2, 10, 1), "flags"),
    ((19, 8), (4, 8), (2, 10), "student"),
    ((20, 8), (6, 8), (2, 10), "teacher"),
    ((20, 8), (4, 7), (2, 10), "teacher"),
    ((20,), (4, 8), (2, 10), "student"),
    ((2, 8), (4, 8), (2, 1), "flags"),
])
def test_ctc_bad_shapes(student_shape, teacher_shape, flags_shape, match):
    with pytest.raises(ValueError, match=match):
        ctc_loss(torch.randn(student_shape), torch.randn(teacher_shape), torch.ones(flags_shape))


def test_ctc_bad_dtype_and_temp():
    with pytest.raises(ValueError, match="student"):
        ctc_loss(torch.ones(4, 3, dtype=torch.long), torch.randn(2, 3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="temp"):
        ctc_loss(torch.randn(4, 3), torch.randn(2, 3), torch.ones(1, 4), temp=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Segmentation loss
# ----------------------------------------------------------------------------------------------------------------
def seg_inputs(batch=2, classes=5, height=7, width=9, dtype=torch.float64):
    logits = torch.randn(batch, classes, height, width, dtype=torch.float64).to(dtype).requires_grad_()
    labels = torch.randint(0, classes, (batch, height, width))
    labels[torch.rand(batch, height, width) < 0.2] = 255
    labels[torch.rand(batch, height, width) < 0.3] = 0
    return logits, labels


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 2, 1, 2), (3, 21, 13, 11)])
def test_seg_matches_official_value_and_grad(shape):
    logits, labels = seg_inputs(*shape)
    labels.view(-1)[0] = 0
    labels.view(-1)[-1] = 1  # both terms present (the official is NaN otherwise)
    grad_out = torch.randn((), dtype=torch.float64)
    ours, (g_ours,) = value_and_grads(lambda x: seg_loss(x, labels), logits, grad_out=grad_out)
    ref, (g_ref,) = value_and_grads(lambda x: official_seg(x, labels), logits, grad_out=grad_out)
    assert_close_fp32(ours, ref, rtol=1e-12, atol=1e-12, what="seg value")
    assert_close_fp32(g_ours, g_ref, rtol=1e-10, atol=1e-12, what="seg grad")


def test_seg_other_ignore_index_and_label_dtypes():
    logits, labels = seg_inputs(classes=4)
    labels[labels == 255] = 7  # 7 used as the ignore value below; 255 no longer occurs
    ref = official_seg(logits, labels, ignore_index=7)
    for dtype in (torch.int64, torch.int32, torch.uint8):
        assert_close_fp32(seg_loss(logits, labels.to(dtype), ignore_index=7), ref, rtol=1e-12, atol=1e-12,
                          what=str(dtype))


def test_seg_gradcheck():
    logits, labels = seg_inputs(batch=2, classes=3, height=4, width=5)
    assert torch.autograd.gradcheck(lambda x: seg_loss(x, labels), (logits,))


@pytest.mark.parametrize("case", ["no_foreground", "no_background"])
def test_seg_missing_term_is_zero_not_nan(case):
    logits, labels = seg_inputs()
    if case == "no_foreground":
        labels[(labels != 0) & (labels != 255)] = 0
        present = labels.clone()
        present[labels != 0] = 255
    else:
        labels[labels == 0] = 3
        present = labels.clone()
    assert torch.isnan(official_seg(logits, labels)), "the official formula is NaN here"
    loss = seg_loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the remaining term alone, halved
    expected = 0.5 * F.cross_entropy(logits.detach(), present, ignore_index=255)
    assert_close_fp32(loss, expected, rtol=1e-12, atol=1e-12, what=case)


def test_seg_all_ignored_gives_zero_and_zero_grad():
    logits, _ = seg_inputs()
    labels = torch.full((2, 7, 9), 255)
    loss = seg_loss(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_seg_fp16_logits():
    logits64, labels = seg_inputs(batch=2, classes=21, height=16, width=16)
    logits16 = logits64.detach().mul(8).half().requires_grad_()  # large logits
    ours = seg_loss(logits16, labels)
    ours.backward()
    ref = official_seg(logits16.detach().double(), labels)
    assert ours.dtype == torch.float32 and torch.isfinite(logits16.grad).all()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("logits_shape,labels_shape,labels_dtype,match", [
    ((2, 3, 4, 5), (2, 4, 5), torch.float32, "labels"),
    ((2, 3, 4, 5), (2, 4, 6), torch.int64, "labels"),
    ((2, 3, 4, 5), (1, 4, 5), torch.int64, "labels"),
    ((2, 3, 4, 5), (2, 1, 4, 5), torch.int64, "labels"),
    ((3, 4, 5), (3, 4, 5), torch.int64, "logits"),
])
def test_seg_bad_inputs(logits_shape, labels_shape, labels_dtype, match):
    with pytest.raises(ValueError, match=match):
        seg_loss(torch.randn(logits_shape), torch.zeros(labels_shape, dtype=labels_dtype))
    with pytest.raises(ValueError, match="logits"):
        seg_loss(torch.zeros(2, 3, 4, 5, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
