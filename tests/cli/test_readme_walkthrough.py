"""The README's face-mask walkthrough stays runnable as written.

Static checks (default run): it works in a scratch folder outside the repository, every file it
names in the shared data exists, step 4b trains the cfg step 3 wrote with the anchors
calc_anchors computed, steps 5 and 6 use the weights training writes, the video is made before
demo reads it, and every ``darknet-py`` command and flag it uses exists.

``@slow``: steps 1-4a run verbatim in a scratch folder, and the quick trial (4a) must reach
mAP@0.5 >= 25 % on the walkthrough's valid list (its last evaluation, at iteration 300).
"""
import os
import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REFDATA, REPO

from darknet_py.cli import main as cli_main


def walkthrough():
    text = (REPO / "README.md").read_text()
    section = text.split("## Face-mask walkthrough", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [ln for ln in block.strip().splitlines() if ln.strip() and not ln.startswith("#")]


def test_walkthrough_is_consistent():
    lines = walkthrough()
    assert lines[0].startswith("REPO=$PWD FM=$PWD/../shared/datasets/facemask")
    assert lines[1] == "mkdir -p ../facemask-run && cd ../facemask-run"
    text = "\n".join(lines)
    for path in re.findall(r"\$FM/(\S+)", text):
        for p in sorted({re.sub(r"\{([^}]*)\}", lambda m: m.group(1).split(",")[0], path)}):
            assert (REFDATA / "datasets" / "facemask" / p).exists(), p
    custom = next(ln for ln in lines if ln.startswith("darknet-py cfg custom"))
    cfg = re.search(r" -o (\S+)", custom).group(1)
    assert "--anchors-from anchors.txt" in custom
    assert lines.index(custom) > lines.index(next(ln for ln in lines if "calc_anchors" in ln))
    trains = [ln for ln in lines if ln.startswith("darknet-py detector train")]
    trial, train = trains      # 4a, the quick trial, then 4b, the full training
    assert train.split()[4] == cfg
    stem = cfg.rsplit(".", 1)[0]
    for ln in lines[lines.index(train) + 1:]:
        if ln.startswith("darknet-py detector"):
            assert ln.split()[4] == cfg and ln.split()[5] == f"data/backup/{stem}_best.weights"
    make = next(i for i, ln in enumerate(lines) if "make_video.py video.mp4" in ln)
    demo = next(i for i, ln in enumerate(lines) if ln.startswith("darknet-py detector demo"))
    assert make < demo and " video.mp4 " in lines[demo]
    assert (REPO / "tools" / "make_video.py").exists()
    # 4a trains the cfg the line before it writes, with step 3's anchors and -map
    trial_custom = lines[lines.index(trial) - 1]
    assert trial_custom.startswith("darknet-py cfg custom") and "--anchors-from anchors.txt" in \
        trial_custom and re.search(r" -o (\S+)", trial_custom).group(1) == trial.split()[4]
    assert " -map" in trial and trial.split()[5] == "yolov4-tiny.conv.29"


@pytest.mark.parametrize("line", [ln for ln in walkthrough() if ln.startswith("darknet-py ")])
def test_walkthrough_commands_parse(line, tmp_path, monkeypatch):
    """Each command's flags are accepted (it then stops at a missing file, not a usage error)."""
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line.replace("$REPO", str(REPO)).replace("$FM", str(tmp_path / "fm")))[1:]
    res = CliRunner().invoke(cli_main, args)
    assert "usage error" not in res.output and "No such" not in res.output, res.output[-300:]
    assert "Traceback" not in res.output


def trial_script(folder) -> str:
    """Steps 1-4a of the walkthrough as written, in ``folder`` instead of ../facemask-run."""
    out = ["set -e"]
    for ln in walkthrough():
        if ln.startswith("mkdir -p ../facemask-run"):
            ln = f"mkdir -p {shlex.quote(str(folder))} && cd {shlex.quote(str(folder))}"
        out.append(ln)
        if ln.startswith("darknet-py detector train") and " trial.cfg " in ln:
            return "\n".join(out) + "\n"
    raise AssertionError("the walkthrough has no quick trial (detector train ... trial.cfg)")


@pytest.mark.slow
def test_quick_trial_learns(tmp_path):
    """The quick trial as a newcomer runs it (about 13 minutes on 2 cores): its last mAP@0.5 on
    data/valid.txt is at least 25 %, and trial_best.weights exists."""
    if not (REFDATA / "datasets" / "facemask" / "annotations").is_dir():
        pytest.skip("the face-mask set is not in the reference data")
    work = tmp_path / "facemask-run"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    res = subprocess.run(["bash", "-c", trial_script(work)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    maps = [float(m) for m in re.findall(r"mean average precision \(mAP@0\.50\) = [0-9.]+, or "
                                         r"([0-9.]+) %", res.stdout + res.stderr)]
    assert len(maps) == 3, res.stdout[-2000:]         # iterations 126, 252 and 300
    assert maps[-1] >= 25.0, maps
    assert (work / "data" / "backup" / "trial_best.weights").is_file()
