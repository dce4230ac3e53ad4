"""tools/bench_map.py runs end to end on a few images and prints its stages and the NMS ratio."""
import subprocess
import sys

from conftest import REFDATA, REPO, require


def test_bench_map_runs_on_four_images(tmp_path):
    require(REFDATA / "datasets" / "facemask")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "bench_map.py"), "--refdata",
                        str(REFDATA), "--workdir", str(tmp_path), "--images", "4",
                        "--compare", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "images 4, detections_count " in r.stdout
    for stage in ("network", "NMS", "match + rank", "total"):
        assert f"\n{stage} " in r.stdout
    assert "identical results: True" in r.stdout and "ratio " in r.stdout
