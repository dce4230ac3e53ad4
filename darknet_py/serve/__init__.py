"""HTTP streams (Darknet's ``-mjpeg_port`` and ``-json_port``), standard library only."""
from .broadcast import Broadcaster
from .server import JsonServer, MjpegServer, ServeError
from .streams import DemoStreams, TrainStreams

__all__ = ["Broadcaster", "JsonServer", "MjpegServer", "ServeError", "DemoStreams",
           "TrainStreams"]
