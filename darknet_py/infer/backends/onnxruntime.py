"""``-backend onnxruntime``: a ``darknet-py export`` ONNX file run by ONNX Runtime on the CPU.

The file's ``darknet_py`` metadata (:mod:`darknet_py.export`) gives the input size, the cfg's
``letter_box``, the class names and one :class:`~darknet_py.structures.heads.HeadSpec` per head,
so the pipeline decodes and suppresses exactly as for the network itself (Darknet's own NMS;
``selected_indices`` of a ``--with-nms`` file are ignored: ONNX's NMS is not Darknet's).

For a cfg + weights, :func:`cached_export` exports once and keeps the file in the user's cache
folder (:func:`cache_folder`: ``$DARKNET_PY_CACHE`` or ``~/.cache/darknet_py``) as
``<weights>.<key>.onnx``, keyed by the hash of the cfg text, the weights bytes, the input size and
the darknet-py version.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ... import USER_WAIT_POLICY, __version__
from ...devices import usable_cpus
from ...errors import DataError, UsageError
from ...export.exporter import (DETECTIONS_NAME, METADATA_KEY, SELECTED_NAME, ExportOptions,
                                export_model, export_network)
from ...files import PathLike, cache_folder
from ...layers.registry import head_class
from ...structures.heads import HeadSpec
from ...timing import race, time_call
from .base import CALIBRATE_MAX_SECONDS, Backend, check_heads

__all__ = ["OnnxRuntimeBackend", "read_onnx_metadata", "metadata_from_props", "cached_export",
           "require_module", "pick_setup"]


def require_module(name: str, extra: str):
    """Import an optional runtime or say in one line how to install it."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(f"the {extra} backend needs the '{name}' package: pip install "
                         f"'darknet-py[{extra}]'") from None


def metadata_from_props(props: Dict[str, str], path: str) -> Dict[str, Any]:
    """The ``darknet_py`` description from an ONNX file's metadata_props."""
    raw = props.get(METADATA_KEY)
    if raw is None:
        raise DataError(f"the ONNX file has no '{METADATA_KEY}' metadata: it was not exported by "
                        f"darknet-py (darknet-py export cfg weights -o model.onnx)", file=path)
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"bad '{METADATA_KEY}' metadata: {e}", file=path) from None
    if not isinstance(meta, dict) or "heads" not in meta:
        raise DataError(f"bad '{METADATA_KEY}' metadata: no head description", file=path)
    return meta


def read_onnx_metadata(path: PathLike) -> Dict[str, Any]:
    """The ``darknet_py`` metadata of an exported ONNX file (without building a session)."""
    onnx = require_module("onnx", "onnx")
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataError("ONNX file not found", file=p)
    try:
        model = onnx.load(p, load_external_data=False)
    except Exception as e:
        raise DataError(f"not a readable ONNX file ({type(e).__name__})", file=p) from None
    return metadata_from_props({m.key: m.value for m in model.metadata_props}, p)


class OnnxFileBackend(Backend):
    """What the ONNX backends share: the metadata, the heads, batching to a fixed batch size."""

    def _read_metadata(self, path: str, meta: Dict[str, Any]) -> None:
        self.source = path
        self.metadata = meta
        self.heads = [_head_spec(h) for h in meta["heads"]]
        check_heads(self.heads, path)
        self.output_heads = [h.get("output", f"{h['type']}_{h['index']}") for h in meta["heads"]]
        self.width, self.height = int(meta["input_width"]), int(meta["input_height"])
        self.channels = int(meta.get("input_channels", 3))
        self.letter_box = bool(int(meta.get("letter_box", 0)))
        self.outputs_kind = meta.get("outputs", "heads")
        self.decoded = self.outputs_kind != "heads"
        self.names = meta.get("names")
        self.fixed_batch: Optional[int] = None if meta.get("batch") == "dynamic" \
            else int(meta["batch"])
        self.input_dtype = np.float16 if meta.get("dtype") == "float16" else np.float32

    def _session_run(self, arr: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError

    def run(self, x: Union[torch.Tensor, np.ndarray]) -> List[np.ndarray]:
        """All of the file's outputs as numpy arrays, in the file's output order."""
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if arr.ndim == 3:
            arr = arr[None]
        shape = (self.channels, self.height, self.width)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
            raise UsageError(f"ONNX model input must be (B, {shape[0]}, {shape[1]}, {shape[2]}), "
                             f"got {tuple(arr.shape)}")
        arr = np.ascontiguousarray(arr, dtype=self.input_dtype)
        fb = self.fixed_batch
        if fb is None or arr.shape[0] == fb:
            return self._session_run(arr)
        b = arr.shape[0]
        pad = (-b) % fb
        if pad:
            arr = np.concatenate([arr, np.zeros((pad,) + arr.shape[1:], arr.dtype)])
        chunks = [self._session_run(arr[i:i + fb]) for i in range(0, arr.shape[0], fb)]
        outs = []
        for k, name in enumerate(self.output_names):
            if name == SELECTED_NAME:  # re-base the batch index of each chunk
                parts = []
                for ci, ch in enumerate(chunks):
                    sel = ch[k].copy()
                    sel[:, 0] += ci * fb
                    parts.append(sel[sel[:, 0] < b])
                outs.append(np.concatenate(parts))
            else:
                outs.append(np.concatenate([ch[k] for ch in chunks])[:b])
        return outs

    def forward(self, x: torch.Tensor):
        outs = dict(zip(self.output_names, self.run(x)))
        if self.decoded:
            return torch.from_numpy(outs[DETECTIONS_NAME])
        return [torch.from_numpy(outs[name]) for name in self.output_heads]


class OnnxRuntimeBackend(OnnxFileBackend):
    name = "onnxruntime"

    def __init__(self, path: PathLike, precision: str = "fp32", threads: Optional[int] = None,
                 calibrate_threads: bool = True):
        ort = require_module("onnxruntime", "onnx")
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DataError("ONNX file not found", file=self.path)
        if precision != "fp32":
            raise UsageError("-backend onnxruntime runs the file in its own precision (fp32, or "
                             "fp16 for a --half export); use -backend openvino for bf16")
        self.session = self._session(ort, threads)
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self._read_metadata(self.path, metadata_from_props(props, self.path))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.threads = threads
        #: whether idle intra-op workers spin (ONNX Runtime's default) or sleep
        self.spinning = _spin_default()
        #: the thread race's median seconds per set-up, ``(threads, spinning)`` -> s
        self.calibration: Dict[Tuple[int, bool], float] = {}
        self._one_thread_session = None
        if calibrate_threads:
            self._calibrate_threads(ort, threads)

    def _session(self, ort, threads: Optional[int], spinning: Optional[bool] = None):
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        spin = _spin_default() if spinning is None else spinning
        # workers that sleep between operators free the CPU for everyone else on a shared
        # machine; spinning ones answer the next operator sooner (each of a small network's
        # ~130 operators wakes them): the thread race decides unless the user set the policy
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(self.path, sess_options=opts,
                                        providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"onnxruntime cannot load the file: {first}", file=self.path) from None

    def _calibrate_threads(self, ort, threads: Optional[int]) -> None:
        """The thread policy for a small network (one batch-1 run under
        ``CALIBRATE_MAX_SECONDS``): one thread and ``threads`` (default: the usable CPUs) with
        sleeping workers and, unless the user set OMP_WAIT_POLICY, with spinning ones, timed
        interleaved for :data:`RACE_ROUNDS` rounds; :func:`pick_setup` decides from the
        medians. :meth:`details` prints the outcome."""
        full = int(threads) if threads else usable_cpus()
        if full <= 1:
            return
        x = np.random.default_rng(0).random((self.fixed_batch or 1, self.channels, self.height,
                                              self.width)) \
            .astype(self.input_dtype)
        feed = {self.input_name: x}
        # the session's first call, timed as it is: a network that slow is worth the threads
        if time_call(functools.partial(self.session.run, None, feed), repeat=1,
                     warmup=0) > CALIBRATE_MAX_SECONDS:
            return
        sessions = {(full, self.spinning): self.session, (1, False): self._session(ort, 1, False)}
        if USER_WAIT_POLICY is None:
            sessions[(full, not self.spinning)] = self._session(ort, full, not self.spinning)
        for s in sessions.values():
            s.run(None, feed)           # every session has run once: no warm-up round
        self.calibration = race({k: functools.partial(s.run, None, feed)
                                 for k, s in sessions.items()}, RACE_ROUNDS, warmup=0)
        best = pick_setup(self.calibration)
        self.session, self.threads, self.spinning = sessions[best], best[0], best[1]
        # the one-thread session stays for :meth:`use_one_thread` (overlapped lists)
        self._one_thread_session = sessions[(1, False)]

    def one_thread_ms(self) -> Optional[float]:
        t = self.calibration.get((1, False))
        return None if t is None or self._one_thread_session is None else 1000.0 * t

    def use_one_thread(self) -> Optional[Callable[[], None]]:
        if self._one_thread_session is None:
            return None
        before = (self.session, self.threads, self.spinning)
        self.session, self.threads, self.spinning = self._one_thread_session, 1, False

        def restore() -> None:
            self.session, self.threads, self.spinning = before
        return restore

    def _session_run(self, arr: np.ndarray) -> List[np.ndarray]:
        return self.session.run(None, {self.input_name: arr})

    def details(self) -> str:
        spin = ", spinning" if self.spinning and self.threads != 1 else ""
        text = f"{self.threads or 'default'} threads{spin}, {self.outputs_kind}"
        if self.calibration:
            text += "; raced " + ", ".join(
                f"{n}{' spinning' if sp else ''}: {1000 * t:.1f} ms"
                for (n, sp), t in sorted(self.calibration.items()))
        return text


#: interleaved rounds of the thread race (a median of 11 shrugs off a few disturbed rounds)
RACE_ROUNDS = 11
#: a set-up costing more CPU (more threads, or spinning) must be this much faster to be picked
RACE_MARGIN = 0.05


def _spin_default() -> bool:
    """Spinning workers when the user's OMP_WAIT_POLICY says ACTIVE, else sleeping ones."""
    return (USER_WAIT_POLICY or "").upper() == "ACTIVE"


def pick_setup(medians: Dict[Tuple[int, bool], float]) -> Tuple[int, bool]:
    """The set-up of the thread race to keep: starting from the cheapest (fewest threads, not
    spinning), a costlier one replaces the current choice only when it is :data:`RACE_MARGIN`
    faster, so that noise never buys CPU time the network does not repay."""
    order = sorted(medians, key=lambda k: (k[0], k[1]))
    best = order[0]
    for k in order[1:]:
        if medians[k] < medians[best] * (1 - RACE_MARGIN):
            best = k
    return best


# ----------------------------------------------------------------------------- export cache
def _cache_key(cfg: str, weights: Optional[str], width, height) -> str:
    h = hashlib.sha256()
    with open(cfg, "rb") as f:
        h.update(f.read())
    if weights is not None:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    h.update(f"|{width}x{height}|{__version__}|heads,dynamic".encode())
    return h.hexdigest()[:16]


def cached_export(cfg: PathLike, weights: Optional[PathLike], *, width=None, height=None,
                  network: Any = None, rebuild: bool = False) -> str:
    """The path of an ONNX export of cfg + weights (dynamic batch, head outputs), made once;
    ``rebuild`` replaces a cached file that could not be loaded. Exports are written
    atomically, but a file cut short by an older version or damaged later is rebuilt by
    :func:`~darknet_py.infer.backends.factory.make_backend` when the runtime refuses it."""
    cfg, weights = os.fspath(cfg), (None if weights is None else os.fspath(weights))
    if not os.path.isfile(cfg):
        raise DataError("cfg file not found", file=cfg)
    if weights is not None and not os.path.isfile(weights):
        raise DataError("weights file not found", file=weights)
    key = _cache_key(cfg, weights, width, height)
    folder = cache_folder()
    path = os.path.join(folder, f"{os.path.basename(weights or cfg)}.{key}.onnx")
    if os.path.isfile(path) and not rebuild:
        return path
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the ONNX export cache folder: {e.strerror} (set "
                        "DARKNET_PY_CACHE to a writable folder)", file=folder) from None
    options = ExportOptions(dynamic_batch=True,
                            weights_name=None if weights is None else os.path.basename(weights))
    if network is not None:
        export_network(network, path, options, sidecar=False)
    else:
        export_model(cfg, weights, path, options, width=width, height=height, sidecar=False)
    return path


def _head_spec(d: Dict[str, Any]) -> HeadSpec:
    """A head of the file's metadata; files exported before the metadata stated each head's
    ``type_code`` get their head class's."""
    if "type_code" not in d:
        d = dict(d, type_code=head_class(str(d.get("type", d.get("kind")))).type_code)
    return HeadSpec.from_dict(d)
