"""Darknet's own flags, and the check every command's arguments go through before click parses them.

Darknet (AlexeyAB, ``src/detector.c`` ``run_detector`` and ``src/darknet.c`` ``main``) reads its
flags with ``find_arg``/``find_int_arg``/``find_float_arg``/``find_char_arg``: ``run_detector``
reads *all* of them for every ``detector`` sub-command and hands each sub-command the ones it uses;
``main`` reads ``-i`` and ``-cuda_debug_sync`` for every command. :data:`DARKNET_FLAGS` lists them
with the kind of value they take, :data:`USES` which Darknet command uses which.

:func:`check_args` runs on a command's arguments (``cli.DarknetGroup.resolve_command``), looking at
the click command's own options first, so a flag is:

* an option of the command: accepted in both spellings (``-flag`` and ``--flag``, ``=value`` too);
* a Darknet flag the Darknet command uses but darknet-py does not implement: a usage error naming
  it (it disappears by itself once the command defines the option);
* a Darknet flag that Darknet parses but does not use for this command (``map -gpus 0``): ignored
  with a one-line warning, its value skipped, as Darknet ignores it;
* anything else: a usage error naming it, with the closest known flag as a hint.
"""
from __future__ import annotations

import difflib
import re
import textwrap
from typing import Dict, List, Optional

import click

from ..errors import UsageError

# name -> value kind: "flag" (find_arg), "int", "float", "str" (find_char_arg)
DETECTOR_FLAGS: Dict[str, str] = {
    "dont_show": "flag", "benchmark": "flag", "benchmark_layers": "flag", "show": "flag",
    "letter_box": "flag", "map": "flag", "points": "int", "show_imgs": "flag",
    "mjpeg_port": "int", "avgframes": "int", "dontdraw_bbox": "flag", "json_port": "int",
    "http_post_host": "str", "time_limit_sec": "int", "out_filename": "str",
    "json_file_output": "str", "out": "str", "prefix": "str", "thresh": "float",
    "iou_thresh": "float", "hier": "float", "c": "int", "s": "int", "num_of_clusters": "int",
    "width": "int", "height": "int", "ext_output": "flag", "save_labels": "flag", "chart": "str",
    "mAP_epochs": "int", "gpus": "str", "clear": "flag",
}
GLOBAL_FLAGS: Dict[str, str] = {"i": "int", "cuda_debug_sync": "flag"}
DARKNET_FLAGS: Dict[str, str] = {**DETECTOR_FLAGS, **GLOBAL_FLAGS}

# darknet-py command (group + name) -> the Darknet flags that Darknet's command uses
USES: Dict[str, frozenset] = {k: frozenset(v.split()) for k, v in {
    "detector test": "thresh hier dont_show ext_output save_labels out letter_box "
                     "benchmark_layers i cuda_debug_sync",
    "detector train": "gpus clear dont_show map thresh iou_thresh mjpeg_port show_imgs "
                      "benchmark_layers chart mAP_epochs i cuda_debug_sync",
    "detector valid": "out i cuda_debug_sync",
    "detector map": "thresh iou_thresh points letter_box i cuda_debug_sync",
    "detector calc_anchors": "num_of_clusters width height show",
    "detector demo": "thresh hier c avgframes s prefix out_filename mjpeg_port dontdraw_bbox "
                     "json_port dont_show ext_output letter_box time_limit_sec http_post_host "
                     "benchmark benchmark_layers json_file_output i cuda_debug_sync",
    "partial": "",
    "detect": "thresh ext_output i cuda_debug_sync",
}.items()}

# the flags Darknet reads (and so accepts) for each command, used or not
PARSED: Dict[str, frozenset] = {
    k: frozenset(DARKNET_FLAGS) if k.startswith("detector ") else frozenset(GLOBAL_FLAGS) | v
    for k, v in USES.items()}

HELP_NAMES = ("-h", "--help", "-help")
_NUMBER = re.compile(r"^-(\d|\.\d)")


def _options(cmd: click.Command) -> Dict[str, click.Option]:
    """Every spelling the command's options were declared with -> the option."""
    out: Dict[str, click.Option] = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for o in list(p.opts) + list(p.secondary_opts):
                out[o] = p
    return out


def _canonical(name: str, opts: Dict[str, click.Option]) -> Optional[str]:
    """The declared spelling of ``name`` (``--thresh`` -> ``-thresh`` and vice versa)."""
    if name in opts:
        return name
    bare = name.lstrip("-")
    for alt in (f"-{bare}", f"--{bare}"):
        if alt in opts:
            return alt
    return None


def _takes_value(opt: click.Option) -> bool:
    return not (opt.is_flag or opt.count)


def not_implemented(key: str, cmd: click.Command) -> List[str]:
    """The Darknet flags Darknet's ``key`` command uses that this command does not define."""
    opts = _options(cmd)
    return sorted(f for f in USES.get(key, ()) if _canonical(f"-{f}", opts) is None)


def help_epilog(key: str, cmd: click.Command) -> Optional[str]:
    """What ``--help`` says about flags: both spellings; Darknet's flags not implemented here."""
    lines = ["Every option takes one dash or two: -flag 1, --flag 1 and --flag=1 are the same."]
    if key in USES:
        missing = not_implemented(key, cmd)
        if missing:
            lines.append("Darknet flags of this command that darknet-py does not implement "
                         "(an error): " + ", ".join(f"-{f}" for f in missing) + ".")
        lines.append(f"Other Darknet flags that Darknet reads but `{key}` does not use are "
                     "ignored with a warning, as Darknet ignores them.")
    wrapped = [w for line in lines for w in textwrap.wrap(line, 96, subsequent_indent="  ")]
    return "\b\n" + "\n".join(wrapped)


def check_args(key: str, cmd: click.Command, args: List[str]) -> List[str]:
    """``args`` with every option in its declared spelling; raises UsageError for a Darknet flag
    darknet-py does not implement or an unknown flag; drops (with a warning) Darknet flags that
    Darknet ignores for this command."""
    opts = _options(cmd)
    darknet = key in USES
    out: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-" or _NUMBER.match(arg):
            out.append(arg)
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name in HELP_NAMES:
            out.append("--help")
            i += 1
            continue
        canon = _canonical(name, opts)
        if canon is not None:
            opt = opts[canon]
            out.append(canon + eq + value)
            n = opt.nargs if (_takes_value(opt) and not eq) else 0
            out.extend(args[i + 1:i + 1 + n])
            i += 1 + n
            continue
        if not darknet and not name.startswith("--") and name[:2] in opts:
            out.append(arg)   # a short option with its value attached (``-omodel.onnx``)
            i += 1
            continue
        bare = name.lstrip("-")
        if darknet and bare in USES[key]:
            raise UsageError(f"-{bare} is a Darknet flag that darknet-py does not implement "
                             f"(for {key})")
        if darknet and bare in PARSED[key]:
            skip = 1 if (DARKNET_FLAGS[bare] != "flag" and not eq) else 0
            click.echo(f"darknet-py: warning: ignored: -{bare} is not supported by {key} "
                       f"(Darknet reads it but does not use it there)", err=True)
            i += 1 + skip
            continue
        raise UsageError(f"no such option {name} for {key}{_hint(name, opts, key)}")
    return out


def _hint(name: str, opts: Dict[str, click.Option], key: str) -> str:
    dashes = "--" if name.startswith("--") else "-"
    # the command's own options first, then the Darknet flags it reads
    for known in ({o.lstrip("-") for o in opts}, PARSED.get(key, ())):
        close = difflib.get_close_matches(name.lstrip("-"), sorted(known), n=1, cutoff=0.6)
        if close:
            return f" (did you mean {dashes}{close[0]}?)"
    return ""
