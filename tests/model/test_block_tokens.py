"""``ViTBackbone.forward_block_tokens`` (every block's patch tokens, for the over-smoothing curve) and
``ToCo.cls_patch_cosine`` (the class-token / patch-token cosine map of the official tool)."""
import torch
import torch.nn.functional as F

from toco_fast.model.toco import ToCo

BACKBONE = {"embed_dim": 32, "depth": 4, "num_heads": 2, "patch_size": 16, "img_size": 64}


def test_block_tokens_agree_with_forward_features():
    model = ToCo(backbone=BACKBONE, num_classes=3, aux_layer=-2, proj_dim=8).eval()
    images = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        tokens = model.encoder.forward_block_tokens(images)
        encoded = model.encoder(images)
    assert len(tokens) == 4 and all(t.shape == (2, 15, 32) for t in tokens)
    torch.testing.assert_close(tokens[2], encoded.aux_tokens, rtol=0, atol=0)
    torch.testing.assert_close(model.encoder.norm(tokens[-1]), encoded.patch_tokens, rtol=1e-6, atol=1e-6)


def test_cls_patch_cosine_is_the_cosine_of_the_final_tokens():
    model = ToCo(backbone=BACKBONE, num_classes=3, proj_dim=8).eval()
    images = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        encoded = model.encoder(images)
        want = F.cosine_similarity(encoded.cls_token[:, None], encoded.patch_tokens, dim=-1).reshape(2, 2, 4)
        got = model.cls_patch_cosine(images)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not got.requires_grad and got.abs().max() <= 1
