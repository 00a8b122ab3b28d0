"""Shared inputs and oracles for the lattice tests (bilateral filter, dense CRF, energy loss).

``rloss_lattice_filter`` re-implements, in plain NumPy float32 and one pixel at a time, the permutohedral lattice
of rloss's ``bilateralfilter`` / pydensecrf's ``Permutohedral`` (elevation, rounding, rank, barycentric weights,
hash of vertices, blur with [1/2, 1, 1/2] along the d+1 directions over existing points only, slice with alpha):
an independent oracle for tiny images.
"""
import numpy as np
import pytest
import torch


def require_extension():
    """Skip the calling test when toco_fast._C is not built (its absence is tested separately)."""
    try:
        from toco_fast import _C  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"toco_fast._C not built: {exc}")


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[H, W, 3] uint8: smooth colour gradients, a few flat shapes with sharp edges, mild noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-60, 60, 2), rng.uniform(0, 1), rng.uniform(60, 190)
        image[..., c] = base + a[0] * ys / height + a[1] * xs / width + 20 * np.sin(6.3 * b + xs / (width / 3 + 1))
    for _ in range(4):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.1, 0.35) * height + 1, rng.uniform(0.1, 0.35) * width + 1
        inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
        image[inside] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 4, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def smooth_probs(num_classes: int, height: int, width: int, seed: int = 0, sharpness: float = 3.0) -> np.ndarray:
    """[K, H, W] float32 softmax of smooth random logits (like upsampled network outputs)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_classes, max(2, height // 16), max(2, width // 16), generator=gen) * sharpness
    logits = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    logits = logits + 0.3 * torch.randn(logits.shape, generator=gen)
    return torch.softmax(logits, dim=1)[0].numpy().astype(np.float32)


def image_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """[B, 3, H, W] float32 natural-looking images with values 0-255."""
    return torch.stack([torch.from_numpy(natural_image(height, width, seed + b)).permute(2, 0, 1).float()
                        for b in range(batch)]).contiguous()


def rloss_lattice_filter(features: np.ndarray, values: np.ndarray, reverse: bool = False) -> np.ndarray:
    """NumPy oracle of the reference lattice filter: features [N, d] float32, values [N, K] -> [N, K]."""
    f32 = np.float32
    n, d = features.shape
    inv_std = f32(np.sqrt(2.0 / 3.0) * (d + 1))
    scale = [f32(1.0 / np.sqrt((i + 2) * (i + 1)) * float(inv_std)) for i in range(d)]
    down, up = f32(1.0) / f32(d + 1), f32(d + 1)
    table = {}
    offsets = np.zeros((n, d + 1), np.int64)
    weights = np.zeros((n, d + 1), np.float32)
    for p in range(n):
        f = features[p].astype(np.float32)
        elevated = [f32(0)] * (d + 1)
        sm = f32(0)
        for j in range(d, 0, -1):
            cf = f[j - 1] * scale[j - 1]
            elevated[j] = sm - f32(j) * cf
            sm = sm + cf
        elevated[0] = sm
        rem0 = [f32(np.rint(down * e)) * up for e in elevated]
        total = int(sum(int(np.rint(down * e)) for e in elevated))
        rank = [0] * (d + 1)
        for i in range(d):
            for j in range(i + 1, d + 1):
                if elevated[i] - rem0[i] < elevated[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        for i in range(d + 1):
            rank[i] += total
            if rank[i] < 0:
                rank[i] += d + 1
                rem0[i] = rem0[i] + up
            elif rank[i] > d:
                rank[i] -= d + 1
                rem0[i] = rem0[i] - up
        bary = [f32(0)] * (d + 2)
        for i in range(d + 1):
            v = (elevated[i] - rem0[i]) * down
            bary[d - rank[i]] = bary[d - rank[i]] + v
            bary[d - rank[i] + 1] = bary[d - rank[i] + 1] - v
        bary[0] = bary[0] + (f32(1) + bary[d + 1])
        for r in range(d + 1):
            key = tuple(int(rem0[i]) + (r if rank[i] <= d - r else r - (d + 1)) for i in range(d))
            offsets[p, r] = table.setdefault(key, len(table))
            weights[p, r] = bary[r]
    keys = list(table)
    lattice = np.zeros((len(keys), values.shape[1]), np.float32)
    for p in range(n):
        for r in range(d + 1):
            lattice[offsets[p, r]] += weights[p, r] * values[p].astype(np.float32)
    directions = range(d, -1, -1) if reverse else range(d + 1)
    for j in directions:
        blurred = lattice.copy()
        for m, key in enumerate(keys):
            minus = [k - 1 for k in key]
            plus = [k + 1 for k in key]
            if j < d:
                minus[j], plus[j] = key[j] + d, key[j] - d
            zero = np.zeros(values.shape[1], np.float32)
            vm = lattice[table[tuple(minus)]] if tuple(minus) in table else zero
            vp = lattice[table[tuple(plus)]] if tuple(plus) in table else zero
            blurred[m] = lattice[m] + f32(0.5) * (vm + vp)
        lattice = blurred
    alpha = f32(1.0) / (f32(1.0) + f32(2.0 ** -d))
    out = np.zeros_like(values, dtype=np.float32)
    for p in range(n):
        for r in range(d + 1):
            out[p] += (weights[p, r] * alpha) * lattice[offsets[p, r]]
    return out
