#!/usr/bin/env python3
"""PASCAL VOC XML -> Darknet label files, the darknet-py counterpart of AlexeyAB's
``scripts/voc_label.py``.

A thin wrapper around :func:`darknet_py.prep.voc.convert_voc_dataset`, taking the same options
as ``darknet-py data voc2yolo``. Face-mask example::

    python tools/voc_label.py /path/facemask/annotations --names cfg/obj.names \\
        --map facemask --out-dir data/facemask

Unlike the upstream script: no -1 centre shift unless ``--voc-shift``, boxes clamped to the image,
6 decimals, class order from ``--names`` (see the module docstring of darknet_py.prep.voc).
"""
import sys
from pathlib import Path

try:
    import darknet_py  # noqa: F401
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from darknet_py.commands.data_voc2yolo import COMMAND  # noqa: E402
from darknet_py.errors import DarknetError  # noqa: E402


def main(argv=None) -> int:
    try:
        COMMAND.main(args=argv, prog_name="voc_label.py", standalone_mode=False)
    except DarknetError as e:
        print(f"voc_label.py: {e.kind}: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:  # click's own exit (e.g. --help)
        return int(e.code or 0)
    except Exception as e:  # click usage errors
        import click
        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
