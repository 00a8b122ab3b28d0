"""Benchmark the permutohedral-lattice ops against what the official ToCo code runs.

Dense CRF on a 500x375 natural-looking image, K=21, 10 mean-field iterations, ToCo's default parameters:
pydensecrf (single-threaded C++, the official post-processing) vs toco_fast on the CPU (2 threads) and, with a GPU,
toco_fast on CUDA for one image and for a batch of 16.
Dense energy loss (forward + backward) at B=4, 224x224, K=21: the CPU path fed through device<->host copies (what
the official loss does every iteration) vs the CUDA path.

    python bench/bench_crf.py [--repeats 10] [--threads 2] [--csv bench/results.csv]
                              [--width 500] [--height 375] [--classes 21] [--batch 16]
                              [--energy-batch 4] [--energy-size 224]

``--classes`` is K of both benchmarks. Without a GPU the CUDA rows are skipped (the script says so).
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._utils import compare, environment, markdown_table, write_csv  # noqa: E402
from toco_fast.losses.energy import DenseEnergyLoss  # noqa: E402
from toco_fast.ops.crf import dense_crf, dense_crf_batch  # noqa: E402


def synthetic_scene(height: int, width: int, seed: int) -> np.ndarray:
    """[H, W, 3] uint8: colour gradients, flat ellipses with sharp edges, sensor-like noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    image = rng.uniform(60, 190, 3) + 60 * (ys[..., None] * rng.uniform(-1, 1, 3)
                                           + xs[..., None] * rng.uniform(-1, 1, 3))
    for _ in range(6):
        centre, radius = rng.uniform(0, 1, 2), rng.uniform(0.08, 0.3, 2)
        inside = ((ys - centre[0]) / radius[0]) ** 2 + ((xs - centre[1]) / radius[1]) ** 2 < 1
        image[inside] = rng.uniform(0, 255, 3)
    return np.clip(np.rint(image + rng.normal(0, 4, image.shape)), 0, 255).astype(np.uint8)


def scene_probs(num_classes: int, height: int, width: int, seed: int) -> np.ndarray:
    """[K, H, W] float32 softmax of upsampled coarse logits, like a segmentation network's output."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_classes, max(1, height // 16), max(1, width // 16), generator=gen) * 3
    logits = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return torch.softmax(logits, dim=1)[0].numpy()


def pydensecrf_runner(image: np.ndarray, probs: np.ndarray):
    """The official ToCo CRF (utils/dcrf.py DenseCRF with sxy=3/compat=3, sxy=80/srgb=13/compat=10, 10 iters)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    def run():
        k, h, w = probs.shape
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        crf.addPairwiseGaussian(sxy=3, compat=3)
        crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
        return np.array(crf.inference(10))

    return run


def bench_crf(repeats: int, threads: int, has_pydensecrf: bool, has_cuda: bool, height: int = 375,
              width: int = 500, classes: int = 21, batch: int = 16):
    size = f"{width}x{height} K={classes}"
    image, probs = synthetic_scene(height, width, 0), scene_probs(classes, height, width, 0)
    cpu = torch.device("cpu")
    rows = []
    paths = {}
    if has_pydensecrf:
        paths["pydensecrf"] = pydensecrf_runner(image, probs)
    torch.set_num_threads(threads)
    paths[f"toco_fast cpu ({threads} threads)"] = lambda: dense_crf(image, probs)
    rows += compare(size, "1 image", paths, cpu, warmup=1, repeats=repeats)
    if has_cuda:
        gpu = torch.device("cuda")
        image_gpu, probs_gpu = torch.from_numpy(image).to(gpu), torch.from_numpy(probs).to(gpu)
        # Same (size, mode) as the CPU rows: the pydensecrf row above is this row's baseline.
        rows += compare(size, "1 image", {"toco_fast cuda": lambda: dense_crf(image_gpu, probs_gpu)}, gpu,
                        warmup=2, repeats=repeats)
        images = [synthetic_scene(height, width, s) for s in range(batch)]
        batch_probs = [scene_probs(classes, height, width, s) for s in range(batch)]
        images_gpu = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in images]).to(gpu)
        probs_gpu = torch.stack([torch.from_numpy(p) for p in batch_probs]).to(gpu)
        paths = {"toco_fast cuda": lambda: dense_crf_batch(images_gpu, probs_gpu)}
        if has_pydensecrf:
            runners = [pydensecrf_runner(im, p) for im, p in zip(images, batch_probs)]
            paths = {"pydensecrf": lambda: [run() for run in runners], **paths}
        rows += compare(size, f"batch {batch}", paths, gpu, warmup=1, repeats=max(2, repeats // 4))
    return rows


def bench_energy(repeats: int, has_cuda: bool, batch: int = 4, side: int = 224, classes: int = 21):
    size = f"B={batch} {side}x{side} K={classes}"
    gen = torch.Generator().manual_seed(0)
    images = torch.stack([torch.from_numpy(synthetic_scene(side, side, s)).permute(2, 0, 1).float()
                          for s in range(batch)])
    logits = torch.randn(batch, classes, max(1, side // 16), max(1, side // 16), generator=gen) * 3
    probs = torch.softmax(torch.nn.functional.interpolate(logits, size=(side, side), mode="bilinear"), dim=1)
    rois = torch.ones(batch, side, side)
    labels = torch.randint(0, classes, (batch, 1, side, side), generator=gen).to(torch.uint8)
    labels[:, :, : side // 4] = 255
    layer = DenseEnergyLoss()
    device = torch.device("cuda" if has_cuda else "cpu")
    tensors = [t.to(device) for t in (images, probs, rois, labels)]

    def cpu_round_trip():
        # What the official loss does: everything to the host, filter there, the gradient back to the device.
        host = [t.cpu() for t in tensors]
        p = host[1].requires_grad_()
        layer(host[0], p, host[2], host[3]).backward()
        return p.grad.to(device)

    def on_device():
        p = tensors[1].detach().requires_grad_()
        layer(tensors[0], p, tensors[2], tensors[3]).backward()
        return p.grad

    paths = {"cpu round trip" if has_cuda else "toco_fast cpu": cpu_round_trip}
    if has_cuda:
        paths["toco_fast cuda"] = on_device
    return compare(size, "loss fwd+bwd", paths, device, warmup=2, repeats=repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for toco_fast's CPU rows")
    parser.add_argument("--csv", default=None, help="append the rows to this CSV file")
    parser.add_argument("--width", type=int, default=500, help="CRF image width")
    parser.add_argument("--height", type=int, default=375, help="CRF image height")
    parser.add_argument("--classes", type=int, default=21, help="K of the CRF and of the energy loss")
    parser.add_argument("--batch", type=int, default=16, help="images of the batched CUDA CRF row")
    parser.add_argument("--energy-batch", type=int, default=4, help="B of the energy-loss rows")
    parser.add_argument("--energy-size", type=int, default=224, help="image side of the energy-loss rows")
    args = parser.parse_args()
    try:
        import pydensecrf.densecrf  # noqa: F401
        has_pydensecrf = True
    except ImportError:
        has_pydensecrf = False
        print("pydensecrf (pip install pydensecrf2) is not installed: no baseline rows")
    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        print(f"No GPU: the CUDA rows (one image, batch of {args.batch}, energy loss on CUDA) need one and are "
              "skipped.")
    print(environment())
    crf_rows = bench_crf(args.repeats, args.threads, has_pydensecrf, has_cuda, args.height, args.width, args.classes,
                         args.batch)
    print("\nDense CRF, 10 iterations (speed-up against pydensecrf)\n")
    print(markdown_table(crf_rows, "pydensecrf"))
    energy_rows = bench_energy(args.repeats, has_cuda, args.energy_batch, args.energy_size, args.classes)
    baseline = "cpu round trip" if has_cuda else "toco_fast cpu"
    print(f"\nDense energy loss, forward + backward (speed-up against {baseline})\n")
    print(markdown_table(energy_rows, baseline))
    if args.csv:
        write_csv(args.csv, "crf", crf_rows + energy_rows)


if __name__ == "__main__":
    main()
