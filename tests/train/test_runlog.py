"""The run log: metrics files and the progress line."""
import io

from toco_fast.train.runlog import MetricsWriter, ProgressBar, Throughput, format_duration


def test_metrics_writer_grows_columns_and_truncates_on_resume(tmp_path):
    writer = MetricsWriter(str(tmp_path))
    writer.write({"kind": "train", "iteration": 2, "loss": 1.5})
    writer.write({"kind": "train", "iteration": 4, "loss": 1.25, "seg": 0.5})  # a new column
    writer.write({"kind": "eval", "iteration": 4, "CAM_mIoU": 0.3})
    writer.write({"kind": "train", "iteration": 6, "loss": float("nan")})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "kind,iteration,loss,seg,CAM_mIoU" and len(lines) == 5
    assert lines[1] == "train,2,1.5,,"

    resumed = MetricsWriter(str(tmp_path), keep_until=4)  # the run resumes from its iteration-4 checkpoint
    assert [r["iteration"] for r in resumed.records] == [2, 4, 4]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4


def test_progress_bar_line():
    stream = io.StringIO()
    bar = ProgressBar(100, stream=stream, enabled=True, min_interval=0.0)
    meter = Throughput(100, start_iter=0)
    meter.add(25, 200, 10.0)
    bar.update(25, {"cls": 0.5, "lr": 6e-5}, meter.images_per_second(), meter.eta_seconds())
    text = stream.getvalue()
    assert "25/100" in text and "cls 0.5" in text and "lr 6.000e-05" in text and "20.00 img/s" in text
    assert "ETA 00:30" in text
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "--:--"
    assert ProgressBar(10, stream=io.StringIO()).enabled is False  # not a terminal: silent
