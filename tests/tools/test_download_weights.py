"""tools/download_weights.py from a local mirror: checksum verified, atomic, idempotent."""
import subprocess
import sys

from conftest import REFDATA, REPO, require

SCRIPT = REPO / "tools" / "download_weights.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_mirror_copy_is_verified(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "yolov4-tiny.weights").symlink_to(require(REFDATA / "weights/yolov4-tiny.weights"))
    r = run("yolov4-tiny.weights", "-o", tmp_path / "w", "--mirror", mirror)
    assert r.returncode == 0, r.stderr
    assert "sha256 cf9fbfd0" in r.stdout and r.stdout.rstrip().endswith("ok")
    r = run("yolov4-tiny.weights", "-o", tmp_path / "w", "--mirror", mirror)
    assert "already present" in r.stdout


def test_corrupt_mirror_file_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "yolov4-tiny.conv.29").write_bytes(b"\0" * 100)
    r = run("yolov4-tiny.conv.29", "-o", tmp_path / "w", "--mirror", mirror)
    assert r.returncode != 0 and "sha256 mismatch" in r.stderr
    assert not list((tmp_path / "w").iterdir())       # nothing written, no temp left
