"""``darknet-py``: Darknet's command line, verb for verb.

``darknet-py detector test|demo|map|valid|train|calc_anchors …`` and ``darknet-py partial …``
take Darknet's positional arguments and single-dash flags (``-thresh 0.25``, ``-dont_show``).
Each command lives in its own module under :mod:`darknet_py.commands` that defines ``COMMAND`` (a
click command) and ``GROUP`` (``"detector"``, ``"data"``, ``"cfg"`` or ``None`` for top level);
this module discovers and registers them.

Every command's arguments go through :func:`darknet_py.commands._flags.check_args` first (in
:meth:`DarknetGroup.resolve_command`): ``--flag`` works like ``-flag`` for every option, a Darknet
flag darknet-py does not implement and an unknown flag are one-line usage errors naming it.

Errors a user can cause are :class:`~darknet_py.errors.DarknetError`: printed on one line, exit
code 1 (runtime) or 2 (usage). ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings

import click

from . import commands
from .commands._flags import check_args, help_epilog
from .errors import DarknetError, UsageError, _strip_worker_traceback
from .imaging.image_header import MAX_PIXELS_ENV

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class DarknetGroup(click.Group):
    """A click group that turns DarknetError into a one-line message and an exit code, and checks
    each command's flags against its options and Darknet's flag table before click parses them."""

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and not isinstance(cmd, click.Group):
            rest = check_args(command_key(ctx, name), cmd, rest)
        return name, cmd, rest

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DarknetError as e:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"darknet-py: {e.kind}: {e}", err=True)
            sys.stdout.flush()
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("darknet-py: interrupted", err=True)
            ctx.exit(130)
        except (MemoryError, RuntimeError) as e:
            # a machine too small for a (valid) cfg/image size: say so in one line
            text = str(e)
            if not isinstance(e, MemoryError) and not any(
                    k in text for k in ("can't allocate memory", "out of memory", "CUDA out of")):
                raise
            if ctx.find_root().params.get("debug"):
                raise
            # an error re-raised from a DataLoader worker carries the worker's traceback: its
            # own message is the last line ("Caught RuntimeError in DataLoader worker" says
            # nothing)
            text = _strip_worker_traceback(text).strip()
            first = text.splitlines()[0] if text else type(e).__name__
            click.echo(f"darknet-py: out of memory: {first}", err=True)
            ctx.exit(1)


@click.group(cls=DarknetGroup, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.option("--max-image-pixels", type=int, default=None, metavar="N",
              help="Refuse images and video frames of more than N pixels, from their header, "
                   "before decoding them (default 134217728 = 2^27, or "
                   "$DARKNET_PY_MAX_IMAGE_PIXELS).")
@click.version_option(package_name="darknet-py", prog_name="darknet-py")
def main(debug: bool, max_image_pixels) -> None:
    """Darknet (AlexeyAB) in PyTorch: same cfgs, same .weights, same numbers.

    Commands mirror `darknet`: `darknet-py detector test obj.data yolo.cfg yolo.weights img.jpg`.
    """
    if not debug:
        warnings.formatwarning = _one_line_warning
    if max_image_pixels is not None:
        if max_image_pixels < 1:
            raise UsageError(f"--max-image-pixels must be positive, got {max_image_pixels}",
                             value=max_image_pixels)
        # through the environment: data-loader workers and torchrun ranks inherit it
        os.environ[MAX_PIXELS_ENV] = str(max_image_pixels)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as ``darknet-py: warning: <message>`` (no source location), like errors."""
    return f"darknet-py: warning: {message}\n"


@main.group(cls=DarknetGroup, context_settings=CONTEXT)
def detector() -> None:
    """Object detection: test, demo, map, valid, train, calc_anchors (as `darknet detector`)."""


@main.group(cls=DarknetGroup, context_settings=CONTEXT)
def data() -> None:
    """Dataset tools: VOC XML to YOLO labels, train/valid/test splits, checks."""


@main.group(cls=DarknetGroup, context_settings=CONTEXT)
def cfg() -> None:
    """Cfg tools: write a custom cfg for N classes, show a network's layer table."""


GROUPS = {"detector": detector, "data": data, "cfg": cfg, None: main}


def command_key(ctx, name: str) -> str:
    """``"detector test"``, ``"partial"``: the command's path below ``darknet-py``."""
    return name if ctx.parent is None else f"{ctx.info_name} {name}"


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        cmd = getattr(mod, "COMMAND", None)
        if cmd is None:
            continue
        group = getattr(mod, "GROUP", None)
        GROUPS[group].add_command(cmd)
        for alias in getattr(mod, "ALIASES", ()):
            GROUPS[group].add_command(cmd, alias)
        key = cmd.name if group is None else f"{group} {cmd.name}"
        epilog = help_epilog(key, cmd)
        cmd.epilog = f"{cmd.epilog}\n\n{epilog}" if cmd.epilog else epilog


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
