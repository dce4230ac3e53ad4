"""``darknet-py detector train obj.data cfg [weights]`` (Darknet's ``train_detector``).

Starts from a full or partial weights file (``yolov4.conv.137``, ``yolov4-tiny.conv.29``: the
layers it holds are found from its size) or from scratch; resumes from ``<cfg>_last.weights``
continuing the iteration count from its ``seen`` (``-clear`` restarts it at 0). Checkpoints go to
``backup=`` as Darknet names them; ``-map`` evaluates mAP on ``valid=`` every
max(100, ``-mAP_epochs`` epochs) iterations after burn_in and writes ``<cfg>_best.weights``.
``chart.png`` (loss and mAP) is written headless. Ctrl-C or SIGTERM stops after the current
mini-batch (an iteration's partial gradients are dropped) or aborts a running mAP calculation,
saves ``_last.weights`` (the last whole iteration) and exits 0; a second signal stops at once
and still saves it, unless it arrives during that save, which it then waits for.

Devices (:mod:`darknet_py.devices`): CUDA GPU 0 when torch sees one, else the CPU; ``-gpus N`` or
``-i N`` choose the GPU, ``-nogpu`` the CPU; on a torch without CUDA ``-gpus``/``-i`` are ignored
with one warning (Darknet's CPU build ignores them), and a GPU index past the visible ones is a
one-line error; the device is printed once on stderr, then the precision. On CUDA fp16 mixed
precision is on by default (``-no_amp`` turns it off); on a CPU with native bf16
(AVX512-BF16/AMX) bf16 autocast with channels-last is on by default (``-no_bf16``: fp32,
Darknet's arithmetic; see :mod:`darknet_py.train.precision`).
Several GPUs ``-gpus 0,1`` train through DDP, one process per GPU (started here with torchrun's
machinery, or run the same command, ``-gpus`` included, under ``torchrun`` yourself; on CPU under
torchrun it uses gloo). The cfg's ``batch`` is the global batch, shared by the processes, and the
learning rate is the cfg's (Darknet instead trains a full batch per GPU and multiplies the rate
by the GPU count): see :mod:`darknet_py.distributed` and docs/scaling.md.
Signals: SIGINT/SIGTERM to the process or its whole group (``timeout``, SLURM, Kubernetes) are
handled by the main process; the data loader workers ignore them and are shut down by it.
``-mjpeg_port N`` serves chart.png as it is redrawn (MJPEG over HTTP) with a page at ``/`` that
also shows the latest loss, learning rate, mAP and time left. Darknet's ``-show_imgs`` windows are
not implemented (``detector show_batch`` writes the augmented images instead).
"""
from __future__ import annotations

import os
import sys

import click
import torch
from torch.distributed.run import main as torchrun_main

from ..devices import select_device
from ..errors import UsageError
from ..serve.server import check_port
from ..train.log import summary_writer_class
from ..train.trainer import Trainer, TrainOptions
from ._common import check_file, flag, parse_gpus, preflight
from ._http import http_flags

GROUP = "detector"


@click.command("train")
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", required=False, type=click.Path(dir_okay=False))
@flag("map", "calc_map", is_flag=True, help="Compute mAP on valid= during training (chart.png).")
@flag("dont_show", is_flag=True, help="No window (darknet-py never opens one; accepted).")
@flag("clear", is_flag=True, help="Restart the iteration count at 0 (ignore seen).")
@flag("gpus", type=str, default=None,
      help="GPU indices, e.g. 0 or 0,1,2,3 (default: GPU 0 when CUDA is available, else CPU; "
           "without CUDA ignored with a warning, as by Darknet's CPU build).")
@flag("i", "gpu_index", type=int, default=None, help="The GPU to train on (-gpus wins); -1: CPU.")
@flag("nogpu", is_flag=True, help="Train on the CPU even when CUDA is available.")
@flag("thresh", type=float, default=0.25, show_default=True, help="-map: confidence threshold.")
@flag("iou_thresh", type=float, default=0.5, show_default=True, help="-map: IoU threshold.")
@flag("mAP_epochs", "map_epochs", type=int, default=4, show_default=True,
      help="-map: evaluate every N epochs (at least every 100 iterations).")
@flag("no_amp", is_flag=True, help="CUDA: train in fp32 (mixed precision is on by default).")
@flag("bf16", "bf16", flag_value=True, default=None,
      help="CPU: bf16 autocast + channels-last; batch norm, the convs before [yolo] and the loss "
           "stay fp32. The default where the CPU has native bf16 (AVX512-BF16/AMX): 2.1x less "
           "time per iteration than fp32 there, same mAP after 400 iterations on the face-mask "
           "set.")
@flag("no_bf16", "bf16", flag_value=False,
      help="CPU: train in fp32 (Darknet's arithmetic; the default on CPUs without native bf16).")
@flag("workers", type=int, default=2, show_default=True, help="Data loader processes.")
@flag("seed", type=int, default=None, help="Seed the augmentation (reproducible runs).")
@flag("verbose", is_flag=True, help="Print Darknet's per-layer 'v3 (...)' loss lines.")
@flag("nan_skip", is_flag=True, help="Skip a batch whose loss is NaN/inf instead of stopping.")
@flag("max_batches", type=int, default=None,
      help="Override [net] max_batches (quick experiments).")
@flag("cache_images", is_flag=True, help="Keep decoded images in RAM.")
@http_flags(json_port=False)
@flag("tensorboard", type=click.Path(file_okay=False), default=None,
      help="Also write loss, learning rate and mAP as TensorBoard scalars into this folder.")
def COMMAND(data, cfg, weights, calc_map, dont_show, clear, gpus, gpu_index, nogpu, thresh,
            iou_thresh, map_epochs, no_amp, bf16, workers, seed, verbose, nan_skip, max_batches,
            cache_images, mjpeg_port, http_host, tensorboard):
    """Train a detector on the images of obj.data's train= list."""
    preflight(data, cfg, weights, lists=("train", "valid") if calc_map else ("train",))
    check_file(cfg, "cfg file")
    if weights is not None:
        check_file(weights, "weights file")
    gpu_list = parse_gpus(gpus)
    for rank in range(max(1, len(gpu_list))):    # a missing GPU fails here, before DDP starts
        select_device(gpu_list, gpu_index, nogpu=nogpu, local_rank=rank)
    if gpu_list and not nogpu and not torch.cuda.is_available():
        gpu_list = []         # select_device warned: one CPU process, as Darknet's CPU build
    if workers < 0:
        raise UsageError("-workers must be >= 0")
    if tensorboard:
        summary_writer_class()          # a one-line error now, not after the network is built
    opts = TrainOptions(data=data, cfg=cfg, weights=weights, clear=clear, dont_show=dont_show,
                        calc_map=calc_map, thresh=thresh, iou_thresh=iou_thresh,
                        map_epochs=map_epochs, gpus=gpu_list, gpu_index=gpu_index,
                        nogpu=nogpu, amp=False if no_amp else None, bf16=bf16,
                        workers=workers, seed=seed, verbose=verbose,
                        nan_policy="skip" if nan_skip else "stop", max_batches=max_batches,
                        cache_images=cache_images,
                        mjpeg_port=check_port(mjpeg_port, "mjpeg_port"),
                        http_host=http_host, tensorboard=tensorboard)
    if len(gpu_list) > 1 and "WORLD_SIZE" not in os.environ:
        _launch_ddp(len(gpu_list))
        return
    Trainer(opts).run()


def _launch_ddp(nproc: int) -> None:
    """Re-run this command as ``nproc`` DDP processes (torchrun's elastic launcher)."""
    argv = ["--standalone", f"--nproc_per_node={nproc}", "-m", "darknet_py.cli"] + sys.argv[1:]
    torchrun_main(argv)
