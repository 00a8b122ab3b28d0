"""The over-smoothing curve (ToCo's Figure 2) against a direct PyTorch computation on a tiny model, and its CSV."""
import numpy as np
import torch
import torch.nn.functional as F

from toco_fast.diagnose import oversmoothing_curve, read_curves_csv, write_curves_csv
from toco_fast.model.toco import ToCo


def _direct_curve(model, images):
    """Embed, run the blocks by hand, mean |cos| over all token pairs per image and block, mean over the images."""
    enc = model.encoder
    per_image = []
    with torch.no_grad():
        for image in images:
            x = enc.patch_embed.proj(image[None])
            h, w = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)
            grid = enc.pos_embed[:, 1:].reshape(1, *enc.pos_grid, -1).permute(0, 3, 1, 2)
            pos = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
            x = torch.cat([enc.cls_token + enc.pos_embed[:, :1], x + pos], dim=1)
            sims = []
            for block in enc.blocks:
                x = block(x)
                t = F.normalize(x[0, 1:], dim=-1)
                sims.append((t @ t.T).abs().mean().item())
            per_image.append(sims)
    return np.mean(np.array(per_image), axis=0)


def test_curve_equals_a_direct_computation():
    torch.manual_seed(0)
    model = ToCo(backbone={"embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 16, "img_size": 64},
                 num_classes=3, proj_dim=8)
    images = torch.randn(5, 3, 48, 48)
    batches = [images[:2], images[2:4], images[4:]]
    curve = oversmoothing_curve(model, batches, torch.device("cpu"))
    assert curve.shape == (4,) and model.training  # mode restored
    np.testing.assert_allclose(curve, _direct_curve(model, images), rtol=1e-5)
    np.testing.assert_allclose(oversmoothing_curve(model, batches, torch.device("cpu"), max_images=3),
                               _direct_curve(model, images[:3]), rtol=1e-5)


def test_curves_csv_round_trip_with_different_depths(tmp_path):
    curves = {"ToCo": np.array([0.3, 0.35, 0.4]), "baseline": np.array([0.3, 0.5])}
    path = write_curves_csv(str(tmp_path / "c.csv"), curves)
    assert open(path).read().splitlines()[:2] == ["block,ToCo,baseline", "1,0.300000,0.300000"]
    back = read_curves_csv(path)
    assert list(back) == ["ToCo", "baseline"]
    np.testing.assert_allclose(back["baseline"], curves["baseline"])
