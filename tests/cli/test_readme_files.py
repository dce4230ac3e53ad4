"""Every README command block names files that exist (or that an earlier line of the block
makes), the first Python API snippet runs, the walkthrough's anchors repeat, and neither the
README, docs/ nor ``--help`` cites issue numbers.

The file check follows each ```bash block from the repository root the way bash would: ``cd``,
variables (``REPO=$PWD``), brace lists, ``>``/``<``; a path is fine when it exists, or when an
earlier command of the block writes it or a folder above it (``-o``, ``--out-dir``, ``>``,
``mkdir``, ``partial``'s output, ``calc_anchors``' anchors.txt, ...). A ``.data`` file that exists
is opened too: its ``names=`` (and ``valid=`` with every listed image, for ``map``/``valid``)
must exist, read relative to the working directory as Darknet does.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import REFDATA, REPO

from darknet_py.cli import GROUPS, main as cli_main

#: blocks that cannot run on one CPU machine with the shared data, and why
NOT_RUNNABLE_HERE = {
    "Scale out": "several GPUs and yolov4.conv.137 / yolov4.weights, which are not shipped",
}
#: options whose value a command writes (a file or a folder)
OUTPUT_OPTIONS = {"-o", "--out", "--out-dir", "-out", "-out_filename", "-json", "-plots",
                  "--workdir", "-fix-into", "-out_dir", "-tensorboard"}
PATHLIKE = re.compile(r"\.(data|cfg|weights|names|jpe?g|png|txt|list|py|tsv|mp4|avi|json|onnx|pt|"
                      r"csv)$|\.conv\.\d+$")


def bash_blocks():
    text = (REPO / "README.md").read_text()
    heading = ""
    for part in re.split(r"(?m)^(## .*)$", text):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        for block in re.findall(r"```bash\n(.*?)```", part, re.S):
            yield heading, block


def _commands(block: str):
    """Lines of a block, continuations joined, comments dropped, split at ``&&``."""
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield from (c.strip() for c in line.split("&&"))


def _braces(token: str):
    m = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    if not m:
        return [token]
    return [t for alt in m.group(1).split(",")
            for t in _braces(token[:m.start()] + alt + token[m.end():])]


class Walk:
    def __init__(self):
        self.cwd = REPO
        self.vars = {}
        self.made = []             # paths the block's commands write (files or folders)
        self.missing = []

    def expand(self, text: str) -> str:
        env = dict(self.vars, PWD=str(self.cwd))
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)

    def path(self, token: str) -> Path:
        return Path(os.path.normpath(self.cwd / token))

    def made_by_block(self, p: Path) -> bool:
        return any(p == m or m in p.parents for m in self.made)

    def need(self, token: str, command: str, data_keys=("names",)) -> None:
        for t in _braces(token):
            p = self.path(t)
            if self.made_by_block(p):
                continue
            if not p.exists():
                self.missing.append(f"{command}: {t}")
            elif p.suffix == ".data":
                self.need_data(p, command, data_keys)

    def need_data(self, data: Path, command: str, keys) -> None:
        from darknet_py.data.datacfg import read_data_cfg, read_list_lines
        cfg = read_data_cfg(str(data))
        for key in keys:
            value = getattr(cfg, key, None)
            if value is None:
                continue
            p = self.path(value)
            if not p.exists():
                self.missing.append(f"{command}: {key}= {value} of {data}")
            elif key == "valid":
                for ln, image in read_list_lines(str(p)):
                    if not self.path(image).exists():
                        self.missing.append(f"{command}: {p}:{ln}: {image}")

    def run(self, command: str) -> None:
        words = shlex.split(command)
        if all(re.match(r"^[A-Z_]+=", w) for w in words):      # REPO=$PWD FM=...
            for w in words:
                k, v = w.split("=", 1)
                self.vars[k] = self.expand(v)
            return
        words = [self.expand(w) for w in words]
        args = []
        it = iter(words)
        for w in it:
            if w == ">":
                self.made.append(self.path(next(it)))
            elif w == "<":
                self.need(next(it), command)
            else:
                args.append(w)
        prog, args = args[0], args[1:]
        if prog == "cd":
            self.cwd = self.path(args[0])
        elif prog == "mkdir":
            self.made += [self.path(a) for a in args if not a.startswith("-")]
        elif prog in ("pip", "printf"):
            pass
        elif prog == "sed":
            for a in args[1:]:                                # args[0] is the script
                self.need(a, command)
        elif prog == "python":
            if args[0] == "-m":
                return
            self.need(args[0], command)
            rest = args[1:]
            if Path(args[0]).name == "make_video.py":         # OUT.mp4 IMAGES...
                self.made.append(self.path(rest[0]))
                rest = rest[1:]
            self.options(rest, command)
        elif prog == "darknet-py":
            self.darknet(args, command)
        else:
            raise AssertionError(f"the README test does not know the command {prog!r}: "
                                 f"{command}")

    def options(self, args, command, data_keys=("names",)):
        positional = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in OUTPUT_OPTIONS and i + 1 < len(args):
                self.made.append(self.path(args[i + 1]))
                i += 2
                continue
            if not a.startswith("-") and ("/" in a or PATHLIKE.search(a)):
                self.need(a, command, data_keys)
            positional.append(a)
            i += 1
        return positional

    def darknet(self, args, command):
        verb = " ".join(args[:2]) if args[0] in ("detector", "data", "cfg") else args[0]
        if verb == "partial":                                  # cfg weights OUT N
            self.made.append(self.path(args[3]))
            args = args[:3]
        keys = ("names", "valid") if verb in ("detector map", "detector valid") else ("names",)
        self.options(args, command, keys)
        if verb == "detector calc_anchors":
            self.made.append(self.cwd / "anchors.txt")


@pytest.mark.parametrize("heading,block", list(bash_blocks()),
                         ids=[h for h, _ in bash_blocks()])
def test_readme_block_files_exist(heading, block):
    if heading in NOT_RUNNABLE_HERE:
        pytest.skip(f"needs {NOT_RUNNABLE_HERE[heading]}")
    if "../shared" in block and not REFDATA.exists():
        pytest.skip("the reference data folder is missing")
    walk = Walk()
    for command in _commands(block):
        walk.run(command)
    assert not walk.missing, "\n".join(walk.missing)


def test_every_darknet_py_command_block_is_checked():
    headings = [h for h, _ in bash_blocks()]
    assert "Seeing evaluation and training" in headings and "Install and run" in headings
    assert set(NOT_RUNNABLE_HERE) <= set(headings)


def test_the_coco_example_list_is_coco128_val2017():
    names = sorted(Path(p).name for p in
                   (REPO / "data" / "coco128-val2017.txt").read_text().split())
    folder = REFDATA / "datasets" / "coco128" / "images" / "val2017"
    if not folder.exists():
        pytest.skip("the reference data folder is missing")
    assert names == sorted(p.name for p in folder.glob("*.jpg")) and len(names) == 128


def test_first_python_api_snippet_runs(tmp_path):
    """The README's first Python block, as written, from a folder laid out like the repository
    (it writes copy.weights; the ONNX cache goes to a scratch folder)."""
    text = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    for name in ("cfg", "weights", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    env = dict(os.environ, DARKNET_PY_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code + "\nprint('outputs', len(outputs))\n"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "outputs 2" in r.stdout and "dog" in r.stdout
    assert (tmp_path / "copy.weights").stat().st_size == \
        (REPO / "weights" / "yolo-fastest-1.1.weights").stat().st_size


def test_walkthrough_anchors_repeat(tmp_path):
    """The walkthrough's calc_anchors line (with its -seed) gives the same anchors twice."""
    from train_fixtures import make_facemask_workdir, run_cli
    text = (REPO / "README.md").read_text().split("## Face-mask walkthrough", 1)[1]
    line = next(ln for ln in text.splitlines() if ln.startswith("darknet-py detector calc_anchors"))
    assert " -seed " in line
    args = shlex.split(line)[1:]
    args[2] = "obj.data"                                     # the fixture's small data set
    root = make_facemask_workdir(tmp_path / "w", n_train=8, n_valid=1)
    runs = []
    for _ in range(2):
        r = run_cli(*args, cwd=root, timeout=300)
        assert r.returncode == 0, r.stderr[-1000:]
        runs.append((root / "anchors.txt").read_text())
    assert runs[0] == runs[1] and runs[0].count(",") == 11


ISSUE = re.compile(r"(?<!upstream )\bissues? #?\d+", re.I)


def _all_commands():
    for group, grp in GROUPS.items():
        for name, cmd in grp.commands.items():
            if not isinstance(cmd, click.Group):
                yield [group, name] if group else [name]


def test_help_readme_and_docs_cite_no_issue_numbers():
    found = []
    for args in [[], *[[g] for g in GROUPS if g], *_all_commands()]:
        out = CliRunner().invoke(cli_main, [*args, "--help"]).output
        found += [f"darknet-py {' '.join(args)} --help: {m}" for m in ISSUE.findall(out)]
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        found += [f"{doc.relative_to(REPO)}: {m}" for m in ISSUE.findall(doc.read_text())]
    assert not found, found


def test_readme_backend_line_is_what_the_program_prints(tmp_path):
    """The sample `Using backend fast on cpu (...)` line names the plan kind the program prints
    for the shipped model (it showed Winograd where the program printed oneDNN)."""
    readme = (REPO / "README.md").read_text()
    sample = re.search(r"`(Using backend fast on cpu \((fp32), [^`]*?(\w+)\))` for the shipped",
                       readme)
    assert sample, "no sample backend line for the shipped model in the README"
    (tmp_path / "cfg").symlink_to(REPO / "cfg")          # coco.data names cfg/coco.names
    r = subprocess.run([sys.executable, "-m", "darknet_py.cli", "detector", "test",
                        "cfg/coco.data", REPO / "cfg" / "yolo-fastest-1.1.cfg",
                        REPO / "weights" / "yolo-fastest-1.1.weights", REPO / "data" / "dog.jpg",
                        "-dont_show", "-backend", "fast"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-1000:]
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("Using backend fast"))
    printed = re.match(r"Using backend fast on cpu \((fp32), .*?(Winograd|oneDNN)", line)
    assert printed and printed.group(2) == sample.group(3), (line, sample.group(1))
