"""Progress of long evaluations on stderr (darknet_py.metrics.progress), silent when quick."""
import io

import pytest
from click.testing import CliRunner

from conftest import REFDATA, REPO, require


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_silent_before_the_delay_then_throttled_on_a_terminal():
    out, clock = io.StringIO(), Clock()
    from darknet_py.metrics.progress import StageProgress
    p = StageProgress(delay=3, stream=out, tty=True, clock=clock)
    p.begin("mAP: matching, images")
    for done in range(1, 11):
        clock.now += 0.1
        p.step(done, 1000)
    assert out.getvalue() == ""                            # 1 s: quick, nothing shown
    clock.now += 3
    p.step(11, 1000)
    for done in range(12, 20):                             # within 0.25 s: throttled
        clock.now += 0.01
        p.step(done, 1000)
    clock.now += 1
    p.step(1000, 1000)
    p.end()
    assert out.getvalue() == ("\r mAP: matching, images: 11/1000 (4 s)"
                              "\r mAP: matching, images: 1000/1000 (5 s)\n")


def test_lines_in_a_log_and_the_check_hook_stops():
    from darknet_py.metrics.progress import StageProgress
    out, clock = io.StringIO(), Clock()
    p = StageProgress(delay=0, stream=out, tty=False, clock=clock)
    p.begin("mAP: detecting, images")
    p.step(4, 8)
    clock.now += 1
    p.step(8, 8)
    p.end()
    assert out.getvalue().splitlines() == ["", " mAP: detecting, images: 4/8 (0 s)",
                                           " mAP: detecting, images: 8/8 (1 s)"]

    class Stop(Exception):
        pass

    def check():
        raise Stop
    with pytest.raises(Stop):
        StageProgress(check=check).step(1, 2)


def test_detector_map_shows_matching_progress_on_stderr(tmp_path, monkeypatch):
    """`detector map` with a stage slower than the delay (0 here) names the stage and counts
    images on stderr; stdout keeps Darknet's text only."""
    from darknet_py.cli import main
    from darknet_py.metrics import progress
    monkeypatch.setattr(progress, "DEFAULT_DELAY", 0.0)
    folder = require(REFDATA / "datasets" / "coco128" / "images" / "val2017")
    images = sorted(folder.glob("*.jpg"))[:4]
    (tmp_path / "val.txt").write_text("".join(f"{p}\n" for p in images))
    (tmp_path / "coco.data").write_text(f"classes=80\nvalid={tmp_path / 'val.txt'}\n"
                                        f"names={REPO / 'cfg' / 'coco.names'}\n")
    r = CliRunner().invoke(main, ["detector", "map", str(tmp_path / "coco.data"),
                                  str(REPO / "cfg" / "yolo-fastest-1.1.cfg"),
                                  str(REPO / "weights" / "yolo-fastest-1.1.weights"),
                                  "-backend", "fast"])
    assert r.exit_code == 0, r.output
    assert " mAP: matching, images: 4/4" in r.stderr
    assert "mAP: matching" not in r.stdout and "mean average precision (mAP@0.50)" in r.stdout
