"""ToCo network: shapes, encoder semantics (pos-embed resize, aux block), single-pass equivalence, EMA, groups."""
import sys
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tolerances import assert_close_fp32
from toco_fast.model import attention as attention_module
from toco_fast.model.attention import AttentionBackendUnavailable, SelfAttention
from toco_fast.model.backbone import ViTConfig, build_backbone, resize_pos_embed
from toco_fast.model.heads import CTCHead, LargeFOV
from toco_fast.model.toco import ToCo, ToCoOutput

TINY = {"embed_dim": 64, "depth": 4, "num_heads": 2}
NUM_CLASSES = 5
PROJ_DIM = 32
SMALL_HEADS = {"decoder_channels": 24, "proj_hidden_dim": 48, "proj_bottleneck_dim": 16}


def tiny_model(**kwargs) -> ToCo:
    """Tiny ViT and narrow heads; ``official_heads=True`` keeps the official decoder/CTC-head widths."""
    sizes = {} if kwargs.pop("official_heads", False) else SMALL_HEADS
    return ToCo(backbone=TINY, **{"num_classes": NUM_CLASSES, "proj_dim": PROJ_DIM, **sizes, **kwargs})


def manual_encoder(encoder, images, aux_index):
    """Straight-line ViT pass: patchify, class token, directly interpolated pos embed, blocks, norm."""
    batch, _, height, width = images.shape
    grid = (height // 16, width // 16)
    x = encoder.patch_embed.proj(images).flatten(2).transpose(1, 2)
    x = torch.cat([encoder.cls_token.expand(batch, -1, -1), x], dim=1)
    patch_pos = encoder.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    x = x + torch.cat([encoder.pos_embed[:, :1], patch_pos.flatten(2).transpose(1, 2)], dim=1)
    outputs = []
    for block in encoder.blocks:
        x = block(x)
        outputs.append(x)
    outputs[-1] = encoder.norm(x)
    return outputs[-1][:, 0], outputs[-1][:, 1:], outputs[aux_index][:, 1:]


def official_three_pass(model, images, view2, local_crops):
    """The official network.forward with crops: main pass, teacher pass, student passes (same weights)."""
    batch, _, height, width = images.shape
    grid = (height // 16, width // 16)
    _, patches, aux = model.encoder(images)
    teacher_in = model.encoder(torch.cat([images, view2]))[0].detach()
    teacher = model.proj_head_t(teacher_in)
    student_global = model.encoder(torch.cat([images, view2]))[0]
    student_local = model.encoder(local_crops)[0]
    student = model.proj_head(torch.cat([student_global, student_local]))
    features = patches.transpose(1, 2).reshape(batch, -1, *grid)
    aux_features = aux.transpose(1, 2).reshape(batch, -1, *grid)
    seg = model.decoder(features)
    cls = model.classifier(F.adaptive_max_pool2d(features, (1, 1))).view(-1, model.num_classes - 1)
    cls_aux = model.aux_classifier(F.adaptive_max_pool2d(aux_features, (1, 1))).view(-1, model.num_classes - 1)
    return {"cls_logits": cls, "aux_cls_logits": cls_aux, "seg_logits": seg, "features": features,
            "student_proj": student, "teacher_proj": teacher}


@pytest.mark.parametrize("size", [(32, 48), (64, 64), (96, 96)])
def test_output_shapes(size):
    model = tiny_model()
    batch, crops = 2, 3
    images, view2 = torch.randn(batch, 3, *size), torch.randn(batch, 3, *size)
    local = torch.randn(crops * batch, 3, 32, 16)
    out = model(images, view2=view2, local_crops=local)
    h, w = size[0] // 16, size[1] // 16
    assert isinstance(out, ToCoOutput)
    assert out.cls_logits.shape == out.aux_cls_logits.shape == (batch, NUM_CLASSES - 1)
    assert out.seg_logits.shape == (batch, NUM_CLASSES, h, w)
    assert out.features.shape == out.aux_features.shape == (batch, 64, h, w)
    assert out.student_proj.shape == ((2 + crops) * batch, PROJ_DIM)
    assert out.teacher_proj.shape == (2 * batch, PROJ_DIM)
    assert out.student_proj.requires_grad and not out.teacher_proj.requires_grad
    plain = model(images)
    assert plain.student_proj is None and plain.teacher_proj is None
    assert_close_fp32(plain.seg_logits, out.seg_logits, rtol=1e-5, atol=1e-5, what="seg without views")
    global_only = model(images, view2=view2)
    assert global_only.student_proj.shape == (2 * batch, PROJ_DIM)


def test_model_attributes():
    model = tiny_model()
    assert (model.patch_size, model.embed_dim, model.num_classes) == (16, 64, NUM_CLASSES)
    assert model.decoder.conv6.out_channels == 24 and model.proj_head.mlp[0].out_features == 48
    official = tiny_model(official_heads=True)
    assert official.decoder.conv6.out_channels == 512 and official.proj_head.mlp[0].out_features == 2048
    assert official.proj_head.mlp[-1].out_features == 256 and official.proj_head.last_layer.out_features == PROJ_DIM
    assert model.encoder.aux_index == 1
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@pytest.mark.parametrize("shape, kwarg, match", [
    ((2, 3, 30, 48), "images", r"images: .*16.*30x48"),
    ((2, 3, 32, 40), "images", r"images: .*32x40"),
    ((2, 3, 32, 40), "view2", r"view2: .*32x40"),
    ((4, 3, 20, 16), "local_crops", r"local_crops: .*20x16"),
    ((3, 3, 16, 16), "local_crops", r"local_crops: .*L\*B"),
    ((2, 3, 48, 48), "view2", r"view2: expected the shape of images"),
    ((2, 1, 32, 32), "images", r"images: expected 3 channels"),
])
def test_rejects_bad_inputs(shape, kwarg, match):
    model = tiny_model()
    args = {"images": torch.randn(2, 3, 32, 32), "view2": torch.randn(2, 3, 32, 32),
            "local_crops": torch.randn(4, 3, 16, 16)}
    args[kwarg] = torch.randn(shape)
    with pytest.raises(ValueError, match=match):
        model(**args)


def test_rejects_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="images: expected a floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="local_crops: given without view2"):
        model(torch.randn(1, 3, 32, 32), local_crops=torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="aux_layer"):
        tiny_model(aux_layer=-5)
    with pytest.raises(ValueError, match="aux_layer"):
        tiny_model(aux_layer=4)
    with pytest.raises(ValueError, match="num_classes"):
        tiny_model(num_classes=1)
    with pytest.raises(ValueError, match="attn_backend"):
        tiny_model(attn_backend="flash")
    with pytest.raises(ValueError, match="backbone: unknown timm model"):
        ToCo(backbone="vit_nonexistent_patch16_224")
    with pytest.raises(ValueError, match="backbone: bad ViT config"):
        ToCo(backbone={"embed_dim": 64, "layers": 4})


@pytest.mark.parametrize("aux_layer", [-3, -1, 0, 2])
def test_aux_layer_selects_block_output(aux_layer):
    encoder = build_backbone(TINY, aux_layer=aux_layer)
    images = torch.randn(2, 3, 48, 32)
    cls_token, patches, aux = encoder(images)
    ref_cls, ref_patches, ref_aux = manual_encoder(encoder, images, aux_index=len(encoder.blocks) + aux_layer
                                                   if aux_layer < 0 else aux_layer)
    assert_close_fp32(cls_token, ref_cls, what="class token")
    assert_close_fp32(patches, ref_patches, what="patch tokens")
    assert_close_fp32(aux, ref_aux, what="aux tokens")
    if aux_layer == -1:  # official quirk: the last block's entry is replaced by the normed tokens
        assert torch.equal(aux, patches)
    else:
        assert not torch.allclose(aux, patches, atol=1e-3)


@pytest.mark.parametrize("grid", [(6, 6), (2, 3), (14, 14), (28, 20)])
def test_pos_embed_resize_is_official_bicubic(grid):
    encoder = build_backbone(TINY)
    pos = encoder.pos_embed
    direct = F.interpolate(pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=grid, mode="bicubic",
                           align_corners=False)
    expected = torch.cat([pos[:, :1], direct.flatten(2).transpose(1, 2)], dim=1)
    assert torch.equal(encoder.resized_pos_embed(grid), expected)
    assert torch.equal(resize_pos_embed(pos, (14, 14), grid), expected)
    if grid == (6, 6):  # timm's resampler antialiases when downsampling: not what the official model does
        from timm.layers import resample_abs_pos_embed

        timm_resized = resample_abs_pos_embed(pos, new_size=list(grid), old_size=[14, 14], num_prefix_tokens=1)
        assert not torch.allclose(timm_resized, expected, atol=1e-4)


def test_pos_embed_frozen():
    model = tiny_model()
    assert not model.encoder.pos_embed.requires_grad
    out = model(torch.randn(2, 3, 32, 32), view2=torch.randn(2, 3, 32, 32))
    (out.seg_logits.sum() + out.student_proj.sum()).backward()
    assert model.encoder.pos_embed.grad is None
    assert model.encoder.cls_token.grad is not None


def test_train_mode_is_deterministic():
    model = tiny_model().train()
    args = (torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48), torch.randn(4, 3, 16, 16))
    first, second = model(*args), model(*args)
    for name, value in vars(first).items():
        assert torch.equal(value, getattr(second, name)), name


def test_single_pass_equals_official_three_passes():
    torch.manual_seed(1)
    model = tiny_model(official_heads=True).train()
    batch, crops = 2, 4
    images, view2 = torch.randn(batch, 3, 48, 32), torch.randn(batch, 3, 48, 32)
    local = torch.randn(crops * batch, 3, 16, 32)
    fast = model(images, view2=view2, local_crops=local)
    naive = official_three_pass(model, images, view2, local)

    weights = {name: torch.randn_like(value) for name, value in naive.items()}
    grads = {}
    for label, outputs in (("fast", {name: getattr(fast, name) for name in naive}), ("naive", naive)):
        model.zero_grad(set_to_none=True)
        loss = sum((outputs[name] * weights[name]).sum() for name in naive if outputs[name].requires_grad)
        loss.backward()
        grads[label] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for name in naive:
        assert_close_fp32(getattr(fast, name), naive[name], rtol=1e-5, atol=1e-5, what=name)
    assert grads["fast"].keys() == grads["naive"].keys()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads["fast"].keys() == trainable
    for name in grads["fast"]:
        assert_close_fp32(grads["fast"][name], grads["naive"][name], rtol=1e-5, atol=1e-5, what=f"grad {name}")


def test_teacher_starts_as_frozen_copy_and_forward_leaves_it():
    model = tiny_model()
    student, teacher = dict(model.proj_head.named_parameters()), dict(model.proj_head_t.named_parameters())
    assert student.keys() == teacher.keys()
    for name in student:
        assert torch.equal(student[name], teacher[name]) and not teacher[name].requires_grad
    before = {n: p.clone() for n, p in teacher.items()}
    model(torch.randn(2, 3, 32, 32), view2=torch.randn(2, 3, 32, 32), local_crops=torch.randn(2, 3, 16, 16))
    assert all(torch.equal(before[n], teacher[n]) for n in teacher)


def test_update_teacher_is_exact_ema():
    model = tiny_model(teacher_momentum=0.9)
    with torch.no_grad():
        for p in model.proj_head.parameters():
            p.add_(torch.randn_like(p))
    student = {n: p.clone() for n, p in model.proj_head.named_parameters()}
    teacher = {n: p.clone() for n, p in model.proj_head_t.named_parameters()}
    rest = {n: p.clone() for n, p in model.named_parameters() if not n.startswith("proj_head_t.")}
    model.update_teacher()
    moved = 0
    for name, param in model.proj_head_t.named_parameters():
        assert torch.equal(param, 0.9 * teacher[name] + (1 - 0.9) * student[name]), name
        moved += not torch.equal(param, teacher[name])
    assert moved >= 6  # every weight and bias of the MLP and the last layer's direction
    assert all(torch.equal(p, rest[n]) for n, p in model.named_parameters() if n in rest)
    assert not any(p.requires_grad for p in model.proj_head_t.parameters())


def test_param_groups_cover_trainable_parameters_once():
    model = tiny_model()
    groups = model.param_groups(lr=6e-5, weight_decay=0.01)
    assert [g["name"] for g in groups] == ["backbone", "backbone_norm", "heads", "decoder"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert all(p.requires_grad for g in groups for p in g["params"])
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == by_name["backbone_norm"]["lr"] == 6e-5
    assert by_name["heads"]["lr"] == by_name["decoder"]["lr"] == pytest.approx(6e-4)
    assert all(g["weight_decay"] == 0.01 for g in groups)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)] for p in by_name["backbone_norm"]["params"])
    assert all(names[id(p)].startswith("encoder.") and "norm" not in names[id(p)]
               for p in by_name["backbone"]["params"])
    head_names = {names[id(p)] for p in by_name["heads"]["params"]}
    assert {"classifier.weight", "aux_classifier.weight"} <= head_names
    assert all(n.startswith(("classifier.", "aux_classifier.", "proj_head.")) for n in head_names)
    assert {names[id(p)] for p in by_name["decoder"]["params"]} == {
        "decoder.conv6.weight", "decoder.conv7.weight", "decoder.conv8.weight"}
    optimizer = torch.optim.AdamW(groups, lr=6e-5)
    out = model(torch.randn(1, 3, 32, 32))
    out.cls_logits.sum().backward()
    optimizer.step()
    with pytest.raises(ValueError, match="lr"):
        model.param_groups(lr=-1.0, weight_decay=0.01)


def test_forward_cams_matches_conv_of_features():
    model = tiny_model()
    images = torch.randn(2, 3, 48, 64)
    cam, cam_aux = model.forward_cams(images)
    assert cam.shape == cam_aux.shape == (2, NUM_CLASSES - 1, 3, 4)
    assert not cam.requires_grad and not cam_aux.requires_grad
    out = model(images)
    assert_close_fp32(cam, F.conv2d(out.features, model.classifier.weight).detach(), what="cam")
    assert_close_fp32(cam_aux, F.conv2d(out.aux_features, model.aux_classifier.weight).detach(), what="cam_aux")
    assert not torch.allclose(cam, cam_aux)


def test_attention_uses_sdpa_and_matches_official_formula(monkeypatch):
    encoder = build_backbone(TINY)
    attn = encoder.blocks[0].attn
    assert isinstance(attn, SelfAttention)
    x = torch.randn(3, 7, 64)
    calls = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real_sdpa(*a, **k))
    out = attn(x)
    assert calls, "attention did not go through scaled_dot_product_attention"
    q, k, v = attn.qkv(x).reshape(3, 7, 3, 2, 32).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-2, -1)) * 32 ** -0.5).softmax(-1) @ v
    assert_close_fp32(out, attn.proj(ref.transpose(1, 2).reshape(3, 7, 64)), what="attention")


def test_xformers_backend_without_xformers_is_a_clear_error():
    attention_module._xformers_attention.cache_clear()
    if "xformers" in sys.modules or _importable("xformers"):
        pytest.skip("xformers is installed")
    with pytest.raises(AttentionBackendUnavailable, match="xformers"):
        tiny_model(attn_backend="xformers")
    with pytest.raises(ImportError, match="pip install xformers"):
        build_backbone(TINY, attn_backend="xformers")


def test_xformers_path_layout(monkeypatch):
    """The xformers path hands [B, N, H, K] tensors to memory_efficient_attention (checked with a stand-in)."""
    def memory_efficient_attention(q, k, v):
        assert q.shape[2] == 2 and q.shape[3] == 32, "expected [B, N, H, K]"
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return (((q @ k.transpose(-2, -1)) / 32 ** 0.5).softmax(-1) @ v).transpose(1, 2)

    fake_ops = types.ModuleType("xformers.ops")
    fake_ops.memory_efficient_attention = memory_efficient_attention
    fake = types.ModuleType("xformers")
    fake.ops = fake_ops
    monkeypatch.setitem(sys.modules, "xformers", fake)
    monkeypatch.setitem(sys.modules, "xformers.ops", fake_ops)
    attention_module._xformers_attention.cache_clear()
    try:
        torch.manual_seed(3)
        sdpa_model = tiny_model()
        xf_model = tiny_model(attn_backend="xformers")
        xf_model.load_state_dict(sdpa_model.state_dict())
        images = torch.randn(2, 3, 32, 48)
        assert_close_fp32(xf_model(images).seg_logits, sdpa_model(images).seg_logits, rtol=1e-5, atol=1e-5,
                          what="xformers vs sdpa")
    finally:
        attention_module._xformers_attention.cache_clear()


@pytest.mark.parametrize("name, dim, depth, heads", [
    ("vit_base_patch16_224", 768, 12, 12), ("deit_base_patch16_224", 768, 12, 12),
    ("vit_small_patch16_224", 384, 12, 6), ("vit_tiny_patch16_224", 192, 12, 3),
])
def test_named_backbones(name, dim, depth, heads):
    with torch.device("meta"):
        encoder = build_backbone(name)
    assert (encoder.embed_dim, encoder.depth, encoder.patch_size, encoder.pos_grid) == (dim, depth, 16, (14, 14))
    assert encoder.blocks[0].attn.num_heads == heads and encoder.blocks[0].attn.qkv.bias is not None
    assert encoder.norm.eps == 1e-6 and encoder.aux_index == depth - 3
    assert not encoder.pos_embed.requires_grad
    assert not any(k.startswith(("head.", "fc_norm.")) for k in encoder.state_dict())


def test_custom_config_object():
    encoder = build_backbone(ViTConfig(embed_dim=32, depth=3, num_heads=4), aux_layer=-2)
    assert (encoder.embed_dim, encoder.depth, encoder.aux_index) == (32, 3, 1)
    cls_token, patches, aux = encoder(torch.randn(1, 3, 16, 32))
    assert cls_token.shape == (1, 32) and patches.shape == aux.shape == (1, 2, 32)


def test_ctc_head_matches_official_structure():
    head = CTCHead(64, out_dim=PROJ_DIM)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 2048), (2048, 2048), (2048, 256)]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    assert abs(linears[1].weight.std().item() - 0.02) < 1e-3
    magnitude = head.last_layer.parametrizations.weight.original0
    assert torch.equal(magnitude, torch.ones_like(magnitude)) and not magnitude.requires_grad
    assert head.last_layer.bias is None
    assert_close_fp32(head.last_layer.weight.norm(dim=1), torch.ones(PROJ_DIM), what="unit rows")
    x = torch.randn(5, 64)
    expected = F.normalize(head.mlp(x), dim=-1) @ head.last_layer.weight.t()
    assert_close_fp32(head(x), expected, what="CTC head")


def test_largefov_matches_official_structure():
    decoder = LargeFOV(64, NUM_CLASSES)
    convs = [decoder.conv6, decoder.conv7, decoder.conv8]
    assert all(c.bias is None for c in convs)
    assert [(c.kernel_size, c.dilation, c.padding) for c in convs] == [
        ((3, 3), (5, 5), (5, 5)), ((3, 3), (5, 5), (5, 5)), ((1, 1), (1, 1), (0, 0))]
    assert [c.out_channels for c in convs] == [512, 512, NUM_CLASSES]
    x = torch.randn(2, 64, 3, 5)
    expected = decoder.conv8(F.relu(decoder.conv7(F.relu(decoder.conv6(x)))))
    assert_close_fp32(decoder(x), expected, what="LargeFOV")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_aux_only_cams_stop_at_the_aux_block_with_the_same_values():
    model = tiny_model()
    images = torch.randn(2, 3, 48, 64)
    cam, cam_aux = model.forward_cams(images)
    calls = []
    hook = model.encoder.blocks[-1].register_forward_hook(lambda *args: calls.append(1))
    none, aux_only = model.forward_cams(images, aux_only=True)
    hook.remove()
    assert none is None and calls == []  # the blocks after the aux block did not run
    assert_close_fp32(aux_only, cam_aux, what="cam_aux")


def test_forward_is_forward_global_plus_projections():
    model = tiny_model()
    images, view2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    crops = torch.randn(4, 3, 16, 16)
    whole = model(images, view2=view2, local_crops=crops)
    out, global_cls = model.forward_global(images, view2)
    student, teacher = model.forward_projections(global_cls, crops)
    assert_close_fp32(out.seg_logits, whole.seg_logits, what="seg")
    assert_close_fp32(student, whole.student_proj, what="student")
    assert_close_fp32(teacher, whole.teacher_proj, what="teacher")
    cam, cam_aux = model.cams_from_features(out.features, out.aux_features)
    ref_cam, ref_aux = model.forward_cams(images)
    assert_close_fp32(cam, ref_cam, what="cam")
    assert_close_fp32(cam_aux, ref_aux, what="cam_aux")
