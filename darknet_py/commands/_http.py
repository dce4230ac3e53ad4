"""The ``-mjpeg_port`` / ``-json_port`` / ``-http_host`` flags of ``detector demo`` and ``train``."""
from __future__ import annotations

from ._common import flag

HOST_HELP = ("Address the -mjpeg_port/-json_port servers listen on (default 127.0.0.1, this "
             "machine only; Darknet listens on every interface: -http_host 0.0.0.0).")


def http_flags(json_port: bool):
    """Add ``-mjpeg_port`` (and ``-json_port`` when asked) and ``-http_host`` to a command."""
    def deco(fn):
        fn = flag("http_host", type=str, default=None, help=HOST_HELP)(fn)
        if json_port:
            fn = flag("json_port", type=int, default=None,
                      help="Stream each frame's detections as Darknet's JSON over HTTP.")(fn)
        return flag("mjpeg_port", type=int, default=None,
                    help=("Stream the drawn frames" if json_port else
                          "Stream chart.png and the loss/mAP numbers")
                    + " over HTTP (MJPEG; a page at http://HOST:PORT/).")(fn)
    return deco
