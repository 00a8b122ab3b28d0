"""The benchmark scripts run end to end at tiny sizes and print complete tables (reference and fast rows side by
side, a 1.00x baseline, a ratio for every row); CI has no GPU, so only their CPU rows run here."""
import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_bench(script, *args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(text, header_start):
    """The body rows (lists of cells) of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def ratio(cell):
    assert cell.endswith("x"), cell
    return float(cell[:-1])


def test_train_step_bench_prints_literal_and_fused_rows_with_phases_and_csv(tmp_path):
    out_csv = tmp_path / "rows.csv"
    text = run_bench("bench_train_step.py", "--size", "64", "--crops", "2", "--local-size", "32", "--repeats", "1",
                     "--warmup", "0", "--no-demo", "--modes", "eager", "--breakdown", "--csv", str(out_csv))
    rows = table_rows(text, "| config | step |")
    assert [(r["step"], r["precision"], r["mode"]) for r in rows] == [("literal", "fp32", "eager"),
                                                                     ("fused", "fp32", "eager")]
    assert ratio(rows[0]["speed-up"]) == 1.0 and ratio(rows[1]["speed-up"]) > 0
    assert all(float(r["p50 ms"]) > 0 and float(r["TFLOP/s"]) > 0 and float(r["peak MB"]) > 0 for r in rows)
    phases = table_rows(text, "| config | step | precision | mode | global |")
    assert len(phases) == 2
    for row in phases:
        assert all(float(row[p]) >= 0 for p in ("global", "cams", "local", "ptc", "ctc", "par_seg", "energy",
                                                 "backward", "optimizer"))
    with open(out_csv) as f:
        written = list(csv.DictReader(f))
    assert [r["path"] for r in written] == ["literal/fp32/eager", "fused/fp32/eager"]
    assert all(float(r["p50_ms"]) > 0 for r in written)


@pytest.mark.parametrize("script,args,header,baseline_path", [
    ("bench_par.py", ["--batch", "1", "--size", "32", "--repeats", "1", "--warmup", "0"], "| size |",
     "official-loop"),
    ("bench_ptc.py", ["--batch", "1", "--dim", "16", "--sizes", "64", "--dtype", "fp32", "--repeats", "1",
                      "--warmup", "0"], "| size |", "reference"),
])
def test_op_benches_print_reference_and_fast_rows_with_ratios(script, args, header, baseline_path):
    rows = table_rows(run_bench(script, *args), header)
    baselines = {r["size"]: r for r in rows if r["path"] == baseline_path}
    assert baselines and all(ratio(r["speed-up"]) == 1.0 for r in baselines.values())
    others = [r for r in rows if r["path"] != baseline_path]
    assert others and all(r["size"] in baselines for r in others)  # every fast row beside its reference
    assert all(ratio(r["speed-up"]) > 0 and float(r["peak MB"]) >= 0 for r in others)


def test_crf_bench_prints_the_crf_against_pydensecrf_and_the_energy_loss_rows():
    pytest.importorskip("pydensecrf.densecrf")
    text = run_bench("bench_crf.py", "--repeats", "1", "--width", "32", "--height", "24", "--classes", "3",
                     "--energy-batch", "1", "--energy-size", "32")
    crf_text, energy_text = text.split("Dense energy loss")
    crf = table_rows(crf_text, "| size | path | mode |")
    assert crf[0]["path"] == "pydensecrf" and ratio(crf[0]["speed-up"]) == 1.0
    assert any(r["path"].startswith("toco_fast cpu") and ratio(r["speed-up"]) > 0 for r in crf)
    energy = table_rows(energy_text, "| size | path | mode |")
    assert energy and all(ratio(r["speed-up"]) > 0 and float(r["p50 ms"]) > 0 for r in energy)


def test_infer_bench_projects_coco_val_from_every_row():
    text = run_bench("bench_infer.py", "--images", "1", "--size", "64", "64", "--backbone", "vit_tiny_patch16_224")
    rows = table_rows(text, "| row | img/s |")
    assert [r["row"] for r in rows][:2] == ["seg MS", "seg MS+CRF"] and len(rows) >= 4
    for r in rows:
        hours = float(r["projected COCO val (40,137 images)"].removesuffix(" h"))
        assert hours == pytest.approx(40137 * float(r["s/img"]) / 3600, rel=0.01)
