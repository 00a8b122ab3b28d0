"""Where the dense CRF of an inference run executes: in this process (the GPU batch path, or the CPU when asked),
or in CPU worker processes (``--crf-workers N``), each with one intra-op thread, while this process runs the model.

``JobQueue`` is the one interface: ``submit(fn, args, on_done)`` runs ``fn(*args)`` and hands its result to
``on_done`` in this process, in submission order (:class:`InlineJobs` at once, :class:`ProcessJobs` when the result
arrives, with at most ``2 * workers`` jobs in flight); ``finish()`` waits for everything, ``close()`` stops the
workers. The job functions below
are module-level so that they pickle: they take numpy arrays (fused logits are recomputed in the worker from the
small per-scale logits), write their PNGs themselves and return the label map for scoring. Given tensors instead
(the inline path), they run where the tensors are: on the GPU for a GPU run.
"""
import collections
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Deque, List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["InlineJobs", "ProcessJobs", "make_jobs", "seg_crf_job", "pseudo_label_job"]

OnDone = Callable[[Any], None]
ArrayLike = Union[np.ndarray, torch.Tensor]


class InlineJobs:
    """Jobs run at once, in this process."""

    def submit(self, fn: Callable, args: Sequence[Any], on_done: OnDone) -> None:
        on_done(fn(*args))

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _init_worker() -> None:
    torch.set_num_threads(1)


class ProcessJobs:
    """Jobs in ``workers`` spawned processes (one intra-op thread each), results handed over in order."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"--crf-workers: expected a positive number of processes, got {workers}")
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker)
        self.limit = 2 * workers
        self.pending: Deque[Tuple[Any, OnDone]] = collections.deque()

    def submit(self, fn: Callable, args: Sequence[Any], on_done: OnDone) -> None:
        self.pending.append((self.pool.submit(fn, *args), on_done))
        self._drain(self.limit)

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep or (self.pending and self.pending[0][0].done()):
            future, on_done = self.pending.popleft()
            on_done(future.result())

    def finish(self) -> None:
        self._drain(0)

    def close(self) -> None:
        """Stop the workers (jobs not started are cancelled); safe to call twice."""
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def make_jobs(workers: int, device: torch.device):
    """:class:`ProcessJobs` for ``workers > 0`` on the CPU, else :class:`InlineJobs` (a GPU runs its CRF itself)."""
    if workers > 0 and device.type == "cpu":
        return ProcessJobs(workers)
    return InlineJobs()


def seg_crf_job(image_uint8: ArrayLike, views: List[Tuple[ArrayLike, Tuple[int, int], Tuple[int, int]]],
                out_hw: Tuple[int, int], flip_mode: str, scale_mode: str, png_path: str) -> np.ndarray:
    """The official seg CRF of one image from its per-scale logits (``[2, C, h, w]`` float32, valid and padded
    sizes): fuse, CRF on the softmax, write ``png_path`` (VOC palette), return the ``[H, W]`` uint8 labels."""
    from toco_fast.infer.crf import crf_refine
    from toco_fast.infer.files import save_label_png
    from toco_fast.infer.fusion import ViewLogits, fuse_views

    fused = fuse_views([ViewLogits(torch.as_tensor(logits), valid, padded) for logits, valid, padded in views],
                       out_hw, flip_mode, scale_mode)
    label = crf_refine(torch.as_tensor(image_uint8), fused[0]).argmax(dim=0).cpu().numpy().astype(np.uint8)
    save_label_png(png_path, label)
    return label


def pseudo_label_job(image_uint8: ArrayLike, cam: ArrayLike, keys: ArrayLike, high: float, low: float,
                     ignore_index: int, crf: bool, id_path: str, rgb_path: str) -> np.ndarray:
    """One image's pseudo label (:func:`toco_fast.infer.cams.pseudo_label_crf` or, without ``crf``,
    :func:`~toco_fast.infer.cams.pseudo_label`) from ``[K, H, W]`` CAMs; writes the id and colour PNGs and returns
    the ``[H, W]`` uint8 labels."""
    from toco_fast.infer.cams import pseudo_label, pseudo_label_crf
    from toco_fast.infer.files import save_color_png, save_id_png

    cam_t, keys_t = torch.as_tensor(cam), torch.as_tensor(keys)
    if crf:
        label = pseudo_label_crf(torch.as_tensor(image_uint8), cam_t, keys_t, high, low, ignore_index)
    else:
        label = pseudo_label(cam_t, keys_t, high, low, ignore_index)
    label = label.cpu().numpy().astype(np.uint8)
    save_id_png(id_path, label)
    save_color_png(rgb_path, label)
    return label
