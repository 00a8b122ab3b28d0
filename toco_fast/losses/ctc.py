"""Class-token contrast (CTC) loss, ToCo's ``CTCLoss_neg``, in a numerically stable form.

Layout (as the official training script builds it):

* ``student`` rows are crop-major: B rows for global view 1, B rows for global view 2, then B rows for each local
  crop, so row ``v * B + i`` is view ``v`` of image ``i``.
* ``teacher`` rows are global view 1 (B rows) then global view 2 (B rows).
* ``flags[i, v]`` is nonzero when view ``v`` of image ``i`` is a positive (the two global views always are; a local
  crop is positive when it holds enough uncertain/foreground CAM), zero when it is a negative (background) crop.

For image ``i`` and teacher view ``k`` let ``z_kv = <teacher_k, student_v> / temp`` and ``N_k = sum_{v neg} e^{z_kv}``.
The official loss per image is::

    (1 / 2) * sum_k [ sum_{v pos} -log(e^{z_kv} / (e^{z_kv} + N_k + 1e-4)) + log(1 + N_k + 1e-4) ] / (n_pos + 1e-4)

averaged over the B images. ``n_pos`` counts the positive views of the image, the two global ones included, and the
pair made of teacher view ``k`` with the identical student view ``k`` is one of the positive pairs.

The last term comes from a ``for ... else`` quirk in the official code: the ``else`` block of a Python ``for`` runs
whenever the loop ends without ``break``, and that loop has no ``break``, so the background-only term
``log(1 + N_k + 1e-4)`` (the loss of a positive whose logit is ``e^0 = 1``) is added once per image and teacher view,
after the positives, and shares the division by ``n_pos + 1e-4``. It is reproduced here.

Deliberate fix: the official evaluates ``exp(z)`` directly, which overflows in fp16 once a dot product exceeds about
``11 * temp`` (and in fp32 past ``88 * temp``), turning the loss into inf/NaN. Here the same value is computed in
fp32 (fp64 for fp64 inputs) in log-sum-exp form: ``log(N_k + 1e-4)`` is one ``logsumexp`` over the negatives and the
constant ``log(1e-4)``, each positive term is ``logaddexp(z_kv, log(N_k + 1e-4)) - z_kv`` and the background term is
``logaddexp(0, log(N_k + 1e-4))``. The whole batch is handled at once, without a loop over images.
"""
import math

import torch

from toco_fast.ops._checks import check_same_device, check_tensor

_EPS = 1e-4
_LOG_EPS = math.log(_EPS)


def ctc_loss(student: torch.Tensor, teacher: torch.Tensor, flags: torch.Tensor, temp: float = 0.5) -> torch.Tensor:
    """ToCo's class-token contrast loss (``CTCLoss_neg``), computed stably.

    Args:
        student: ``[ncrops*B, P]`` float, student projections, crop-major (view 1, view 2, local crop 0, ...).
        teacher: ``[2*B, P]`` float, teacher projections of the two global views (view 1 rows, then view 2 rows).
        flags: ``[B, ncrops]`` any dtype; nonzero marks a positive view, zero a negative one.
        temp: temperature dividing the dot products (VOC 0.5; the official COCO script hard-codes 1.0).

    Returns:
        A scalar in fp32 (fp64 when either projection is fp64). Gradients flow to both ``student`` and ``teacher``
        (detach the teacher upstream, as the model does).
    """
    check_tensor("student", student, ndim=2, floating=True, shape_doc="[ncrops*B,P]")
    check_tensor("teacher", teacher, ndim=2, floating=True, shape_doc="[2*B,P]")
    check_tensor("flags", flags, ndim=2, shape_doc="[B,ncrops]")
    check_same_device("ctc_loss", student=student, teacher=teacher, flags=flags)
    batch, ncrops = flags.shape
    if batch < 1 or ncrops < 2:
        raise ValueError(f"flags: expected [B,ncrops] with B >= 1 and ncrops >= 2 (two global views first), "
                         f"got shape {tuple(flags.shape)}")
    if student.shape[0] != ncrops * batch:
        raise ValueError(f"student: expected ncrops*B = {ncrops}*{batch} = {ncrops * batch} rows to match flags "
                         f"{tuple(flags.shape)}, got shape {tuple(student.shape)}")
    if teacher.shape[0] != 2 * batch:
        raise ValueError(f"teacher: expected 2*B = {2 * batch} rows (B from flags), got shape {tuple(teacher.shape)}")
    if teacher.shape[1] != student.shape[1]:
        raise ValueError(f"teacher: projection size {teacher.shape[1]} does not match student's {student.shape[1]}")
    if not temp > 0:
        raise ValueError(f"temp: expected a positive temperature, got {temp}")

    dtype = torch.float64 if torch.float64 in (student.dtype, teacher.dtype) else torch.float32
    dim = student.shape[1]
    student_views = student.to(dtype).reshape(ncrops, batch, dim).transpose(0, 1)  # [B, ncrops, P]
    teacher_views = teacher.to(dtype).reshape(2, batch, dim).transpose(0, 1)  # [B, 2, P]
    logits = torch.matmul(teacher_views, student_views.transpose(1, 2)) / temp  # [B, 2, ncrops]

    positive = (flags != 0).unsqueeze(1)  # [B, 1, ncrops]
    eps_column = logits.new_full((batch, 2, 1), _LOG_EPS)
    # log(N_k + 1e-4); the finite eps column keeps it finite (and its gradient NaN-free) when there is no negative.
    log_denominator = torch.logsumexp(torch.cat([logits.masked_fill(positive, -math.inf), eps_column], dim=-1),
                                      dim=-1)  # [B, 2]
    pair_terms = torch.logaddexp(logits, log_denominator.unsqueeze(-1)) - logits
    positive_sum = torch.where(positive, pair_terms, torch.zeros_like(pair_terms)).sum(dim=-1)  # [B, 2]
    background = torch.logaddexp(log_denominator, torch.zeros_like(log_denominator))  # [B, 2]

    n_pos = positive.squeeze(1).sum(dim=1).to(dtype)
    per_image = (positive_sum + background).sum(dim=1) / 2 / (n_pos + _EPS)
    return per_image.mean()
