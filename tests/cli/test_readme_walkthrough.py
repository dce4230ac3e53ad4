"""The README's face-mask walkthrough stays runnable as written (a static check; the full run,
with training, takes minutes even with ``-max_batches 1`` and is done by hand).

Checked: it works in a scratch folder outside the repository, every file it names in the shared
data exists, step 4 trains the cfg step 3 wrote with the anchors calc_anchors computed, steps 5
and 6 use the weights training writes, the video is made before demo reads it, and every
``darknet-py`` command and flag it uses exists.
"""
import re
import shlex

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
    train = next(ln for ln in lines if ln.startswith("darknet-py detector train"))
    assert train.split()[4] == cfg
    stem = cfg.rsplit(".", 1)[0]
    for ln in lines[lines.index(train) + 1:]:
        if ln.startswith("darknet-py detector"):
            assert ln.split()[4] == cfg and ln.split()[5] == f"data/backup/{stem}_best.weights"
    make = next(i for i, ln in enumerate(lines) if "make_video.py video.mp4" in ln)
    demo = next(i for i, ln in enumerate(lines) if ln.startswith("darknet-py detector demo"))
    assert make < demo and " video.mp4 " in lines[demo]
    assert (REPO / "tools" / "make_video.py").exists()


@pytest.mark.parametrize("line", [ln for ln in walkthrough() if ln.startswith("darknet-py ")])
def test_walkthrough_commands_parse(line, tmp_path, monkeypatch):
    """Each command's flags are accepted (it then stops at a missing file, not a usage error)."""
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line.replace("$REPO", str(REPO)).replace("$FM", str(tmp_path / "fm")))[1:]
    res = CliRunner().invoke(cli_main, args)
    assert "usage error" not in res.output and "No such" not in res.output, res.output[-300:]
    assert "Traceback" not in res.output
