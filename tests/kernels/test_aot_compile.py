"""Every Triton kernel compiles ahead of time for sm_80 and sm_90, in every block configuration its launcher can
choose (no GPU needed; ``toco_fast.gpu_check.aot``). The registers, spills and shared memory per configuration are
printed with the test's output and written to ``build/aot_kernels.md``."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
HW = 112 * 112


def _choices(configs, kernel, fields, dtype=None, **constexprs):
    """{(constexpr values of ``fields``..., num_warps, num_stages)} of ``kernel``'s configurations that match."""
    return {tuple(c.constexprs[f] for f in fields) + (c.options.get("num_warps"), c.options.get("num_stages"))
            for c in configs if c.kernel == kernel and (dtype is None or c.pointers["xhat_ptr" if "xhat_ptr" in
                                                                                     c.pointers else "x_ptr"] == dtype)
            and all(c.constexprs.get(k) == v for k, v in constexprs.items())}


def test_configs_cover_every_launcher_choice():
    """The enumeration is exactly what a sweep of the launchers' own choice functions gives, without duplicates."""
    from toco_fast.gpu_check.aot import jit_kernels, kernel_configs
    from toco_fast.kernels import par, ptc

    configs = kernel_configs()
    keys = [(c.kernel, sorted(c.pointers.items()), sorted(c.constexprs.items())) for c in configs]
    assert len({repr(k) for k in keys}) == len(keys), "duplicate configurations"
    assert sorted({f"{c.module}.{c.kernel}" for c in configs}) == jit_kernels()
    for name, dtype in DTYPES.items():
        assert _choices(configs, "_normalize_kernel", ("BLOCK_R", "BLOCK_D"), name) == {
            ptc.normalize_config(True) + (None, None)}
        for precision in (("ieee", "tf32") if dtype == torch.float32 else ("tf32",)):
            swept = {ptc.launch_config(True, dtype, dim) for dim in range(1, 4097)}
            assert _choices(configs, "_ptc_bwd_kernel", ("BLOCK_M", "BLOCK_D", "BLOCK_DO"), name,
                            INPUT_PRECISION=precision, SPLIT_SIGNS=dtype != torch.float32) == swept
            for has_keys in (True, False):
                assert _choices(configs, "_pair_sums_kernel", ("BLOCK", "BLOCK_D"), name, INPUT_PRECISION=precision,
                                HAS_KEYS=has_keys) == {(b, d, w, s) for b, d, _, w, s in swept}
    # PAR: 8 neighbours per dilation, 1 to 16 dilations; any number of channels.
    assert _choices(configs, "_par_affinity_kernel", ("BLOCK_N", "BLOCK_P")) == {
        par.affinity_config(8 * d, HW, True) + (None,) for d in range(1, 17)}
    assert _choices(configs, "_par_propagate_kernel", ("BLOCK_K", "BLOCK_P")) == {
        par.propagate_config(k, HW, True) + (None,) for k in range(1, 257)}


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path, capsys):
    """Real (non-interpreted) JIT in a subprocess, with an empty cache so every configuration really compiles."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache")
    report = os.path.join(ROOT, "build", "aot_kernels.md")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "toco_fast.gpu_check.aot", "--arch", "80", "90", "--jobs", "2",
                           "--report", report], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    with capsys.disabled():
        print(f"\n{done.stdout}\n(also in {report})")
    assert done.returncode == 0, f"AOT compilation failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert "0 failed" in done.stdout
