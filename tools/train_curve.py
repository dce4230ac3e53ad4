#!/usr/bin/env python
"""Train a recipe, evaluate every checkpoint it saved, and print / plot mAP against iteration.

Default recipe: the face-mask fine-tune (``oracle/train_curve/yolov4-tiny-facemask3-320.cfg``
of the reference data: yolov4-tiny, 3 classes, 320x320, batch 16/2, 400 iterations) from
yolov4-tiny.conv.29, on ``datasets/facemask/train.list``, evaluated on ``val.list``. Its YOLO
labels (class order of ``cfg/obj.names``: chin_diaper, mask, no_mask) are built in ``--workdir``
from the VOC XMLs of the reference data, whose images are only symlinked::

    python tools/train_curve.py                                     # the default recipe
    python tools/train_curve.py --data obj.data --cfg my.cfg --weights yolov4-tiny.conv.29 \\
        --no-bf16 --max-batches 2000 --workdir run1
    python tools/train_curve.py --eval-only --data obj.data --cfg my.cfg --backup backup/
    python tools/train_curve.py ... --reference ../shared/oracle/train_curve/darknet_map_val.tsv

Training runs in this process through :class:`darknet_py.train.trainer.Trainer` (what
``detector train`` runs; its log goes to ``<workdir>/train.log``), then every
``<backup>/<cfg>_<N>.weights`` (and ``_last`` / ``_final`` when they hold an iteration no numbered
file has) is evaluated on the ``valid=`` list as ``detector map`` does (objectness 0.005, NMS
0.45; ``-thresh`` 0.25 for precision/recall), at IoU 0.5 and 0.75 from one detection pass.

Output: a table (iteration, training wall seconds when the training log has them, mAP@0.5 and
mAP@0.75 in percent, the loss and avg loss of that iteration from ``<backup>/<cfg>_log.csv``),
``<workdir>/train_curve.csv`` (mAPs as fractions, like Darknet's ``mean_average_precision``) and
``<workdir>/train_curve.png``. ``--reference FILE`` overlays another curve: a TSV/CSV with an
``iteration`` column and a mAP column (the first whose name starts with ``map``, as fractions 0..1)
such as ``darknet_map_val.tsv`` or a ``train_curve.csv`` of an earlier run.

``--saveweights N`` sets how often a numbered checkpoint is written (default: the obj.data's
``saveweights``, 100 for the default recipe); the tool then trains from a copy of the obj.data
in the work folder with that value (and ``backup=`` there unless ``--backup`` names one).
Errors in the inputs are one line (``darknet-py``'s ``DarknetError``), exit status 1.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from darknet_py.errors import DarknetError, DataError, UsageError  # noqa: E402

#: the default recipe, relative to the reference data folder
DEFAULT_CFG = ("oracle", "train_curve", "yolov4-tiny-facemask3-320.cfg")
FACEMASK = ("datasets", "facemask")
WEIGHTS = ("weights", "yolov4-tiny.weights")
CONV29_BYTES = 19789716          # yolov4-tiny.conv.29 = the first 29 layers of yolov4-tiny.weights
IOUS = (0.5, 0.75)


def refdata() -> Path:
    return Path(os.environ.get("DARKNET_PY_REFDATA", REPO.parent / "shared")).resolve()


# ---------------------------------------------------------------------------------- the recipe
def build_facemask_recipe(workdir: Path, saveweights: int) -> Tuple[Path, Path, Path]:
    """obj.data, cfg and conv.29 of the default recipe in ``workdir`` (labels converted there)."""
    from darknet_py.prep.voc import convert_voc_dataset, parse_name_map
    ref = refdata()
    fm = ref.joinpath(*FACEMASK)
    cfg_src = ref.joinpath(*DEFAULT_CFG)
    weights_src = ref.joinpath(*WEIGHTS)
    for p in (fm / "annotations", fm / "train.list", fm / "val.list", cfg_src, weights_src):
        if not p.exists():
            raise DataError("reference data for the default recipe not found (set "
                            "DARKNET_PY_REFDATA, or give --data/--cfg/--weights)", file=str(p))
    labels = workdir / "facemask"
    names = REPO / "cfg" / "obj.names"
    lists = {}
    for split in ("train", "val"):
        stems = [l.strip() for l in (fm / f"{split}.list").read_text().split() if l.strip()]
        lists[split] = stems
    if not (labels / (lists["train"][0][:-4] + ".txt")).exists():
        xmls = [fm / "annotations" / (s.rsplit(".", 1)[0] + ".xml") for s in
                lists["train"] + lists["val"]]
        convert_voc_dataset(xmls, names, parse_name_map("facemask"), out_dir=labels,
                            images_dir=fm / "images")
    for split in ("train", "val"):
        (workdir / f"{split}.txt").write_text(
            "".join(f"{labels / s}\n" for s in lists[split]))
    data = workdir / "obj.data"
    data.write_text(f"classes=3\ntrain={workdir / 'train.txt'}\nvalid={workdir / 'val.txt'}\n"
                    f"names={names}\nbackup={workdir / 'backup'}\nsaveweights={saveweights}\n")
    cfg = workdir / cfg_src.name
    cfg.write_bytes(cfg_src.read_bytes())
    conv = workdir / "yolov4-tiny.conv.29"
    if not conv.exists() or conv.stat().st_size != CONV29_BYTES:
        with open(weights_src, "rb") as f:
            conv.write_bytes(f.read(CONV29_BYTES))
    return data, cfg, conv


def data_with(data: Path, workdir: Path, saveweights: Optional[int],
              backup: Optional[Path]) -> Path:
    """A copy of ``data`` in ``workdir`` with ``saveweights=`` and ``backup=`` (``backup`` or
    ``<workdir>/backup``, so that this run's checkpoints do not mix with older ones) replaced;
    relative paths of the original resolved against the current folder, as Darknet reads them."""
    out = []
    for line in data.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in ("saveweights", "backup") and "=" in line:
            continue
        if key in ("train", "valid", "names", "difficult") and "=" in line:
            value = line.split("=", 1)[1].strip()
            line = f"{key}={os.path.abspath(value)}"
        out.append(line)
    if saveweights is not None:
        out.append(f"saveweights={saveweights}")
    out.append(f"backup={os.path.abspath(backup or (workdir / 'backup'))}")
    copy = workdir / "obj.data"
    if copy.resolve() == data.resolve():
        raise UsageError("--workdir must not hold the --data file itself", value=str(data))
    copy.write_text("\n".join(out) + "\n")
    return copy


# ---------------------------------------------------------------------------------- training
def train(data: Path, cfg: Path, weights: Optional[Path], workdir: Path, args) -> None:
    from darknet_py.train.trainer import Trainer, TrainOptions
    opts = TrainOptions(data=str(data), cfg=str(cfg), weights=str(weights) if weights else None,
                        clear=args.clear, dont_show=True, bf16=args.bf16,
                        workers=args.workers, seed=args.seed, max_batches=args.max_batches,
                        nogpu=args.nogpu, chart=False)
    log_path = workdir / "train.log"
    print(f"training {cfg.name} from {weights or 'scratch'} (log: {log_path})", flush=True)
    t0 = time.time()
    with open(log_path, "a") as log:     # relative paths of obj.data: from the current folder
        Trainer(opts, out=log).run()
    print(f"training took {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------- checkpoints
@dataclass
class Checkpoint:
    iteration: int
    path: Path


def find_checkpoints(backup: Path, base: str, images_per_iteration: int) -> List[Checkpoint]:
    """``<base>_<N>.weights`` by N, then ``_last`` / ``_final`` if their iteration (from the
    header's ``seen``) is not one of those."""
    from darknet_py.formats.weights import WeightsHeader
    if not backup.is_dir():
        raise DataError("the backup folder does not exist", file=str(backup))
    found: Dict[int, Checkpoint] = {}
    pat = re.compile(re.escape(base) + r"_(\d+)\.weights$")
    for p in backup.iterdir():
        m = pat.match(p.name)
        if m:
            found[int(m.group(1))] = Checkpoint(int(m.group(1)), p)
    for suffix in ("last", "final"):
        p = backup / f"{base}_{suffix}.weights"
        if p.is_file():
            with open(p, "rb") as f:
                head = f.read(24)
            it = WeightsHeader.unpack(head, str(p)).seen // max(1, images_per_iteration)
            if it not in found:
                found[it] = Checkpoint(it, p)
    if not found:
        raise DataError(f"no {base}_<N>.weights checkpoint in the backup folder", file=str(backup))
    return [found[k] for k in sorted(found)]


@dataclass
class CurvePoint:
    iteration: int
    weights: str
    maps: Dict[float, float]
    loss: Optional[float] = None
    avg_loss: Optional[float] = None
    elapsed_s: Optional[float] = None


def read_train_log(path: Path) -> Dict[int, Tuple[float, float, float]]:
    """iteration -> (loss, avg loss, elapsed seconds) from a ``<cfg>_log.csv``; a resumed run
    appends to the same file, so elapsed seconds are made cumulative over its restarts."""
    rows: Dict[int, Tuple[float, float, float]] = {}
    if not path.is_file():
        return rows
    offset, last = 0.0, 0.0
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("kind") != "iter":
                continue
            try:
                el = float(r["elapsed_s"])
                if el < last:             # a new run appended: continue its clock
                    offset += last
                last = el
                rows[int(r["iteration"])] = (float(r["loss"]), float(r["avg_loss"]), offset + el)
            except (KeyError, ValueError):
                continue
    return rows


def evaluate_checkpoints(cfg: Path, checkpoints: Sequence[Checkpoint], valid: str,
                         names: Sequence[str], classes: int, thresh: float, device,
                         log_rows: Dict[int, Tuple[float, float, float]]) -> List[CurvePoint]:
    import torch

    from darknet_py.data.datacfg import read_list
    from darknet_py.infer.backends.exact import ExactBackend
    from darknet_py.infer.evaluate import collect_map_inputs
    from darknet_py.metrics import darknet_map
    from darknet_py.model.network import Network
    images = read_list(valid)
    if not images:
        raise DataError("the valid list is empty", file=valid)
    net = Network.from_cfg(str(cfg))
    net.to(device)
    net.eval()
    points = []
    for ck in checkpoints:
        t0 = time.time()
        net.load_weights(str(ck.path))
        with torch.inference_mode():
            inputs = collect_map_inputs(ExactBackend.wrap(net), images=images)
        maps = {iou: float(darknet_map(inputs.detections, inputs.truths, classes, list(names),
                                       iou_thresh=iou, thresh=thresh).map) for iou in IOUS}
        loss, avg, el = log_rows.get(ck.iteration, (None, None, None))
        points.append(CurvePoint(ck.iteration, str(ck.path), maps, loss, avg, el))
        print(f"  {ck.path.name}: mAP@0.50 {maps[0.5] * 100:.2f} %, mAP@0.75 "
              f"{maps[0.75] * 100:.2f} % ({time.time() - t0:.1f} s)", flush=True)
    return points


# ---------------------------------------------------------------------------------- output
def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cell(v: Optional[float], spec: str) -> str:
    return "" if v is None else format(v, spec)


def format_table(points: Sequence[CurvePoint]) -> str:
    lines = [f"{'iteration':>9}  {'train_s':>8}  {'mAP@0.50':>8}  {'mAP@0.75':>8}  "
             f"{'loss':>9}  {'avg_loss':>9}"]
    for p in points:
        lines.append(f"{p.iteration:>9}  {_fmt(p.elapsed_s, '8.0f'):>8}  "
                     f"{p.maps[0.5] * 100:>7.2f}%  {p.maps[0.75] * 100:>7.2f}%  "
                     f"{_fmt(p.loss, '9.4f'):>9}  {_fmt(p.avg_loss, '9.4f'):>9}")
    return "\n".join(lines)


CSV_FIELDS = ("iteration", "train_seconds", "map50", "map75", "loss", "avg_loss", "weights")


def write_csv(points: Sequence[CurvePoint], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for p in points:
            w.writerow([p.iteration, _cell(p.elapsed_s, ".1f"), f"{p.maps[0.5]:.6f}",
                        f"{p.maps[0.75]:.6f}", _cell(p.loss, ".6f"), _cell(p.avg_loss, ".6f"),
                        p.weights])


def read_reference(path: Path) -> Tuple[str, List[Tuple[int, float]]]:
    """(column name, [(iteration, mAP fraction)]) of a TSV/CSV reference curve."""
    if not path.is_file():
        raise DataError("reference curve not found", file=str(path))
    text = path.read_text()
    first = text.splitlines()[0] if text.strip() else ""
    delim = "\t" if "\t" in first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    header = [h.strip() for h in rows[0]] if rows else []
    if "iteration" not in header:
        raise DataError("reference curve needs an 'iteration' column in its header line",
                        file=str(path))
    cols = [i for i, h in enumerate(header) if h.lower().startswith("map")]
    if not cols:
        raise DataError("reference curve needs a mAP column (a name starting with 'map')",
                        file=str(path))
    it_col, map_col = header.index("iteration"), cols[0]
    out = []
    for n, r in enumerate(rows[1:], 2):
        if not r or not "".join(r).strip():
            continue
        try:
            out.append((int(float(r[it_col])), float(r[map_col])))
        except (IndexError, ValueError):
            raise DataError(f"line {n} of the reference curve is not numbers: {delim.join(r)}",
                            file=str(path)) from None
    return header[map_col], out


def plot(points: Sequence[CurvePoint], path: Path, title: str,
         reference: Optional[Tuple[str, str, List[Tuple[int, float]]]] = None,
         log_rows: Optional[Dict[int, Tuple[float, float, float]]] = None) -> None:
    """mAP@0.5 / @0.75 per checkpoint, the reference curve, and the avg loss of every logged
    iteration (of the checkpoints only, without a training log) on a second axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    its = [p.iteration for p in points]
    ax.plot(its, [p.maps[0.5] * 100 for p in points], "o-", color="tab:red", label="mAP@0.50")
    ax.plot(its, [p.maps[0.75] * 100 for p in points], "s--", color="tab:orange",
            label="mAP@0.75")
    if reference is not None:
        label, column, ref = reference
        ax.plot([r[0] for r in ref], [r[1] * 100 for r in ref], "^:", color="tab:gray",
                label=f"{label} ({column})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mAP on the valid list (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if log_rows:
        losses = sorted((it, row[1]) for it, row in log_rows.items())
    else:
        losses = [(p.iteration, p.avg_loss) for p in points if p.avg_loss is not None]
    handles, labels = ax.get_legend_handles_labels()
    if losses:
        ax2 = ax.twinx()
        ax2.plot([l[0] for l in losses], [l[1] for l in losses], "-", color="tab:blue",
                 alpha=0.6, label="avg loss")
        ax2.set_ylabel("avg loss (log scale)")
        if min(l[1] for l in losses) > 0:     # the first iterations' loss is ~100x the last
            ax2.set_yscale("log")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="obj.data (default: the face-mask recipe)")
    p.add_argument("--cfg", type=Path, help="cfg (default: the face-mask recipe's)")
    p.add_argument("--weights", type=Path,
                   help="start weights, e.g. yolov4-tiny.conv.29 (default recipe: conv.29)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for labels, log, CSV, PNG (default: ./train_curve_<cfg>)")
    p.add_argument("--backup", type=Path, default=None,
                   help="checkpoint folder (default: the obj.data's backup=; with --saveweights "
                        "or the default recipe: <workdir>/backup)")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate the checkpoints already in the backup folder")
    p.add_argument("--saveweights", type=int, default=None,
                   help="save a numbered checkpoint every N iterations")
    p.add_argument("--max-batches", type=int, default=None, help="override [net] max_batches")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                   help="CPU bf16 autocast (-bf16; the default where the CPU has native bf16)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="CPU: train in fp32 (-no_bf16)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--seed", type=int, default=None, help="seed the augmentation")
    p.add_argument("--clear", action="store_true", help="restart the iteration count (-clear)")
    p.add_argument("--nogpu", action="store_true", help="CPU even when CUDA is available")
    p.add_argument("--valid", type=Path, default=None, help="evaluate on this list, not valid=")
    p.add_argument("--thresh", type=float, default=0.25, help="-thresh of detector map")
    p.add_argument("--reference", type=Path, default=None,
                   help="TSV/CSV curve to overlay (iteration + a map column, fractions)")
    p.add_argument("--csv", type=Path, default=None, help="default <workdir>/train_curve.csv")
    p.add_argument("--png", type=Path, default=None, help="default <workdir>/train_curve.png")
    return p.parse_args(argv)


def run(args) -> List[CurvePoint]:
    from darknet_py.data.datacfg import read_data_cfg, read_names
    from darknet_py.devices import describe, select_device
    from darknet_py.formats.cfg import read_cfg
    from darknet_py.train.checkpoints import basecfg
    if args.saveweights is not None and args.saveweights <= 0:
        raise UsageError("--saveweights must be a positive number of iterations",
                         value=args.saveweights)
    if args.workers < 0:
        raise UsageError("--workers must be >= 0", value=args.workers)
    default_recipe = args.data is None and args.cfg is None
    if not default_recipe and (args.data is None or args.cfg is None):
        raise UsageError("give both --data and --cfg (or neither, for the face-mask recipe)")
    for name in ("data", "cfg", "weights", "valid", "reference"):
        p = getattr(args, name)
        if p is not None and not p.is_file():
            raise DataError(f"--{name} file not found", file=str(p))
    workdir = (args.workdir or Path(f"train_curve_{basecfg(str(args.cfg or DEFAULT_CFG[-1]))}"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if default_recipe:
        data, cfg, conv = build_facemask_recipe(workdir, args.saveweights or 100)
        weights = args.weights or conv
        if args.backup is not None:
            data = data_with(data, workdir, None, args.backup)
    else:
        data, cfg, weights = args.data.resolve(), args.cfg.resolve(), args.weights
        if args.saveweights is not None or args.backup is not None and not args.eval_only:
            data = data_with(data, workdir, args.saveweights, args.backup)
    dc = read_data_cfg(str(data))
    backup = Path(args.backup if args.backup is not None else dc.backup_or_default())
    if not args.eval_only:
        train(data, cfg, weights, workdir, args)
    net_section = read_cfg(str(cfg))[0]
    images_per_iteration = net_section.int("batch", 1)
    base = basecfg(str(cfg))
    checkpoints = find_checkpoints(backup, base, images_per_iteration)
    valid = str(args.valid) if args.valid else dc.valid_or_default(dc.train_or_default())
    names_path = dc.names_or_default()
    classes = dc.classes_or_default(0)
    names = read_names(names_path) if os.path.exists(names_path) else \
        [str(i) for i in range(classes)]
    if classes <= 0:
        classes = len(names)
    device = select_device(None, None, nogpu=args.nogpu)
    print(f"evaluating {len(checkpoints)} checkpoints of {backup} on {valid} "
          f"({describe(device)})", flush=True)
    log_rows = read_train_log(backup / f"{base}_log.csv")
    points = evaluate_checkpoints(cfg, checkpoints, valid, names, classes, args.thresh, device,
                                  log_rows)
    print(format_table(points))
    csv_path = args.csv or workdir / "train_curve.csv"
    write_csv(points, csv_path)
    reference = None
    if args.reference is not None:
        column, rows = read_reference(args.reference)
        reference = (args.reference.stem, column, rows)
    png = args.png or workdir / "train_curve.png"
    plot(points, png, f"{base} on {Path(valid).name}", reference, log_rows)
    print(f"wrote {csv_path} and {png}")
    return points


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except DarknetError as e:
        print(f"train_curve: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
