"""PASCAL VOC XML annotations to Darknet (YOLO) label files.

Plays the role of AlexeyAB's ``scripts/voc_label.py`` for any VOC-style dataset (the Kaggle
face-mask set in particular): one ``.txt`` per image, one ``<class> <cx> <cy> <w> <h>`` line per
object, coordinates relative to the image size, written where Darknet looks for them.

Deliberate differences from ``voc_label.py``:

* **No -1 shift by default.** ``voc_label.py`` computes ``cx = ((xmin + xmax) / 2 - 1) / W`` (it
  moves VOC's 1-based pixel coordinates to 0-based, for the centre only; ``w``/``h`` are not
  shifted). The face-mask oracle (``shared/oracle`` part E and G) used ``cx = (xmin + xmax) / 2 /
  W`` with no shift, and so do we; ``voc_shift=True`` (``--voc-shift``) gives the script's formula.
* **Boxes are clamped to the image** (``0 <= x <= W``, ``0 <= y <= H``) before converting; the
  face-mask set has boxes ending at ``xmax = width + 1``. The script does not clamp.
* Numbers are written with 6 decimals (``%.6f``, as Yolo_mark writes them and as the README's
  example shows); the script writes Python's ``str(float)``. Darknet reads them with
  ``fscanf("%f")`` into float32, so 6 decimals are below 1e-6 of the image size.
* ``difficult`` objects are kept unless ``skip_difficult`` (the script always drops them).
* Class names go through an optional name map (``with_mask=mask``) and are looked up in an
  ``obj.names``, so the class ids follow the names file's order.

Where the label goes: Darknet finds an image's label with ``replace_image_to_label``
(``src/utils.c``): it swaps ``/JPEGImages/`` for ``/labels/`` (and ``/images/train2017/`` etc. for
``/labels/train2017/``) and the image extension for ``.txt``; every other image needs its label
right next to it. :func:`label_path_for_image` mirrors that, and the converter writes the label
where that function says, for the image path that goes into the list files. With ``out_dir`` the
images are symlinked (or copied) into ``out_dir`` and the labels written next to the links, so the
source dataset is never modified.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from xml.parsers import expat

import numpy as np

from ..data.datacfg import read_names  # the one names reader (torch-free)
from ..errors import DataError, UsageError
from ..files import PathLike
from ..imaging.image import read_image_size

#: XML names of the Kaggle face-mask set -> the report's ``obj.names`` (chin_diaper, mask, no_mask).
#: On the command line: ``--map facemask`` or, spelled out,
#: ``--map mask_weared_incorrect=chin_diaper,with_mask=mask,without_mask=no_mask``.
FACEMASK_NAME_MAP: Dict[str, str] = {
    "mask_weared_incorrect": "chin_diaper",
    "with_mask": "mask",
    "without_mask": "no_mask",
}

#: Named mappings accepted by :func:`parse_name_map` in place of ``a=b,...``.
NAME_MAP_PRESETS: Dict[str, Dict[str, str]] = {"facemask": FACEMASK_NAME_MAP}

#: Image extensions replace_image_to_label turns into ``.txt`` (one list, in darknet_py.data).
from ..data.paths import IMAGE_EXTENSIONS as DARKNET_IMAGE_EXTENSIONS  # noqa: E402
from ..data.paths import label_path


# --------------------------------------------------------------------------- names and maps
def check_names(names: Sequence[str], file: Optional[PathLike] = None) -> List[str]:
    """The class names as the prep tools require them, from :func:`read_names` (the one reader,
    Darknet's ``get_labels``): each name stripped of surrounding white space; a blank line between
    names, a duplicate name or an empty file is a :class:`DataError` (Darknet would silently make a
    class called "", and a duplicate would make the class id of a name ambiguous)."""
    lines = [name.strip() for name in names]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("names file is empty (one class name per line expected)", file=file)
    seen: Dict[str, int] = {}
    for i, name in enumerate(lines, 1):
        if name == "":
            raise DataError("blank line inside the names file (every line names one class)",
                            file=file, line=i)
        if name in seen:
            raise DataError(f"class name '{name}' appears twice (lines {seen[name]} and {i})",
                            file=file, line=i, value=name)
        seen[name] = i
    return lines


def read_class_names(path: PathLike) -> List[str]:
    """An ``obj.names`` file (one class name per line, in class-id order) read with
    :func:`read_names` and checked with :func:`check_names`."""
    return check_names(read_names(path), path)


def parse_name_map(specs: Union[None, str, Iterable[str]]) -> Dict[str, str]:
    """Parse ``--map`` values: ``"xml_name=obj_name,..."`` or a preset name (``"facemask"``).

    Several specs are merged left to right. An empty spec gives the identity mapping.
    """
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    mapping: Dict[str, str] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        if spec in NAME_MAP_PRESETS:
            mapping.update(NAME_MAP_PRESETS[spec])
            continue
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                presets = ", ".join(sorted(NAME_MAP_PRESETS))
                raise UsageError(f"--map expects XML_NAME=CLASS_NAME pairs separated by commas "
                                 f"(or a preset: {presets}), got '{item}'", value=item)
            src, dst = (s.strip() for s in item.split("=", 1))
            if not src or not dst:
                raise UsageError(f"--map entry '{item}' has an empty name", value=item)
            mapping[src] = dst
    return mapping


# --------------------------------------------------------------------------- label paths
def label_path_for_image(image_path: PathLike) -> str:
    """Where Darknet looks for an image's label file (``replace_image_to_label``).

    The one implementation lives in :func:`darknet_py.data.paths.label_path`; an image whose
    extension Darknet cannot map keeps its path (so the caller sees it does not end in .txt).
    """
    out = label_path(image_path, strict=False)
    return os.fspath(image_path) if out is None else out


# --------------------------------------------------------------------------- XML parsing
@dataclass
class _Node:
    tag: str
    line: int
    children: List["_Node"] = field(default_factory=list)
    text_parts: List[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts).strip()

    def find(self, tag: str) -> Optional["_Node"]:
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> List["_Node"]:
        return [c for c in self.children if c.tag == tag]


def _parse_xml_tree(path: Path) -> _Node:
    """Parse an XML file into a small element tree that remembers each element's line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("annotation file not found", file=path) from None
    except OSError as e:
        raise DataError(f"cannot read annotation file: {e.strerror}", file=path) from None
    parser = expat.ParserCreate()
    stack: List[_Node] = []
    roots: List[_Node] = []

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            roots.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].text_parts.append(text)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise DataError(f"malformed XML: {expat.ErrorString(e.code)} (column {e.offset + 1})",
                        file=path, line=e.lineno) from None
    if not roots:
        raise DataError("empty XML document", file=path)
    return roots[0]


@dataclass
class VocObject:
    """One ``<object>`` of a VOC annotation."""

    name: str
    box: Tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels, as written
    difficult: bool
    line: int  # line of the <object> element


@dataclass
class VocAnnotation:
    """One VOC XML file: image name, declared size, objects."""

    xml_path: Path
    filename: Optional[str]
    folder: Optional[str]
    width: Optional[int]   # None when <size> is missing or says 0
    height: Optional[int]
    depth: Optional[int]
    objects: List[VocObject]

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float64 ``xmin, ymin, xmax, ymax``."""
        return np.asarray([o.box for o in self.objects], dtype=np.float64).reshape(-1, 4)

    @property
    def names(self) -> List[str]:
        return [o.name for o in self.objects]


def _child_number(node: _Node, tag: str, path: Path, what: str, required: bool) -> Optional[float]:
    child = node.find(tag)
    if child is None or child.text == "":
        if required:
            raise DataError(f"{what}: missing <{tag}>", file=path, line=node.line)
        return None
    try:
        return float(child.text)
    except ValueError:
        raise DataError(f"{what}: <{tag}> is not a number: '{child.text}'", file=path,
                        line=child.line, value=child.text) from None


def parse_voc_xml(path: PathLike) -> VocAnnotation:
    """Read one PASCAL VOC annotation file.

    Only direct ``<object>`` children of ``<annotation>`` count (VOC ``<part>`` elements are
    nested inside objects). A missing ``<size>`` (or width/height 0) leaves ``width``/``height``
    as None: the converter then reads the size from the image file. Malformed XML, an object
    without ``<name>`` or ``<bndbox>``, or a coordinate that is not a number raise
    :class:`DataError` with the file and line.
    """
    p = Path(path)
    root = _parse_xml_tree(p)
    if root.tag != "annotation":
        raise DataError(f"not a PASCAL VOC annotation: root element is <{root.tag}>, "
                        "expected <annotation>", file=p, line=root.line)
    filename_node = root.find("filename")
    folder_node = root.find("folder")
    width = height = depth = None
    size = root.find("size")
    if size is not None:
        w = _child_number(size, "width", p, "<size>", required=False)
        h = _child_number(size, "height", p, "<size>", required=False)
        d = _child_number(size, "depth", p, "<size>", required=False)
        if w is not None and h is not None and w > 0 and h > 0:
            width, height = int(round(w)), int(round(h))
        depth = None if d is None else int(d)
    objects: List[VocObject] = []
    for k, obj in enumerate(root.findall("object"), 1):
        name_node = obj.find("name")
        if name_node is None or name_node.text == "":
            raise DataError(f"object {k} has no <name>", file=p, line=obj.line)
        what = f"object {k} ('{name_node.text}')"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{what} has no <bndbox>", file=p, line=obj.line)
        box = tuple(_child_number(bnd, t, p, what, required=True)  # type: ignore[misc]
                    for t in ("xmin", "ymin", "xmax", "ymax"))
        diff = _child_number(obj, "difficult", p, what, required=False)
        objects.append(VocObject(name_node.text, box,  # type: ignore[arg-type]
                                 bool(diff), obj.line))
    return VocAnnotation(
        xml_path=p,
        filename=filename_node.text if filename_node is not None and filename_node.text else None,
        folder=folder_node.text if folder_node is not None and folder_node.text else None,
        width=width, height=height, depth=depth, objects=objects)


# --------------------------------------------------------------------------- box conversion
def voc_to_yolo_boxes(boxes: np.ndarray, width: float, height: float, clamp: bool = True,
                      voc_shift: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """VOC pixel boxes ``(N, 4) xmin, ymin, xmax, ymax`` to YOLO ``(N, 4) cx, cy, w, h`` in 0..1.

    ``clamp`` first limits x to ``[0, width]`` and y to ``[0, height]``. ``voc_shift`` subtracts 1
    pixel from the centre like ``voc_label.py``'s ``convert``. Returns the YOLO boxes (float64) and
    a bool mask of the boxes that clamping changed. Boxes with ``w <= 0`` or ``h <= 0`` are returned
    as they are; the caller decides what to do with them.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if clamp:
        c = b.copy()
        c[:, 0::2] = np.clip(c[:, 0::2], 0.0, float(width))
        c[:, 1::2] = np.clip(c[:, 1::2], 0.0, float(height))
        clamped = np.any(c != b, axis=1)
        b = c
    else:
        clamped = np.zeros(len(b), dtype=bool)
    shift = 1.0 if voc_shift else 0.0
    yolo = np.stack([((b[:, 0] + b[:, 2]) / 2.0 - shift) / width,
                     ((b[:, 1] + b[:, 3]) / 2.0 - shift) / height,
                     (b[:, 2] - b[:, 0]) / width,
                     (b[:, 3] - b[:, 1]) / height], axis=1)
    return yolo, clamped


def format_yolo_lines(class_ids: np.ndarray, yolo_boxes: np.ndarray, decimals: int = 6) -> str:
    """Darknet label text: ``"<id> <cx> <cy> <w> <h>\\n"`` per box (empty string for no boxes)."""
    ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return ""
    fmt = f"%d %.{decimals}f %.{decimals}f %.{decimals}f %.{decimals}f"
    rows = np.column_stack([ids.astype(object), np.asarray(yolo_boxes, dtype=np.float64)])
    return "\n".join(fmt % tuple(r) for r in rows) + "\n"


# --------------------------------------------------------------------------- image files
def _image_candidates(ann: VocAnnotation, images_dir: Optional[Path]) -> Iterator[Path]:
    """Where the image of an annotation may be, most likely first (lazily)."""
    xml_dir = ann.xml_path.parent
    if images_dir is not None:
        dirs = [images_dir]
    else:
        dirs = [xml_dir, xml_dir.parent / "images", xml_dir.parent / "JPEGImages"]
        if ann.folder:
            dirs.append(xml_dir.parent / ann.folder)
    names: List[str] = []
    if ann.filename:
        names.append(Path(ann.filename).name)
    stems = []
    if ann.filename:
        stems.append(Path(ann.filename).stem)
    stems.append(ann.xml_path.stem)
    # exact <filename> first, then the same stem with any image extension Darknet accepts
    for stem in dict.fromkeys(stems):
        names.extend(stem + ext for ext in DARKNET_IMAGE_EXTENSIONS)
    for d in dict.fromkeys(dirs):
        for n in dict.fromkeys(names):
            yield d / n


def find_image(ann: VocAnnotation, images_dir: Optional[Path] = None) -> Optional[Path]:
    """The image file an annotation describes, or None.

    Looks for ``<filename>`` in ``images_dir`` (or, without it, next to the XML, then in
    ``../images``, ``../JPEGImages`` and ``../<folder>``), then for the same stem (and the XML's
    stem) with any image extension Darknet accepts: the face-mask XMLs say ``.jpg`` for images that
    were PNG originally.
    """
    for cand in _image_candidates(ann, images_dir):
        if cand.is_file():
            return cand
    return None


def _place_image(src: str, dst: str, mode: str) -> None:
    """Put ``src`` at ``dst`` as a symlink, hard link or copy; re-running is a no-op."""
    if os.path.abspath(src) == os.path.abspath(dst):
        return
    if os.path.lexists(dst):
        if os.path.islink(dst):
            if os.readlink(dst) == src:
                return
            os.remove(dst)  # a stale link from an earlier run: re-point it
        elif os.path.exists(src) and os.path.samefile(src, dst):
            return
        else:
            raise DataError(f"refusing to replace an existing file with a link to {src}", file=dst)
    if mode == "symlink":
        os.symlink(src, dst)
    elif mode == "hardlink":
        os.link(src, dst)
    elif mode == "copy":
        shutil.copy2(src, dst)
    else:
        raise UsageError(f"unknown image placement '{mode}' (symlink, hardlink or copy)",
                         value=mode)


# --------------------------------------------------------------------------- conversion
def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ",".join(f"{v:g}" for v in box) + ")"


@dataclass
class ConversionResult:
    """What :func:`convert_voc_dataset` did (counts per class follow ``names``)."""

    names: List[str]
    out_dir: Optional[str]
    xml_files: int = 0
    image_paths: List[str] = field(default_factory=list)   # as they should go into list files
    label_paths: List[str] = field(default_factory=list)
    class_counts: np.ndarray = None  # type: ignore[assignment]  # boxes written per class id
    images_per_class: np.ndarray = None  # type: ignore[assignment]  # images with >= 1 box of it
    xml_name_counts: Dict[str, int] = field(default_factory=dict)  # every <object> by XML name
    unknown_counts: Dict[str, int] = field(default_factory=dict)   # skipped: name not in names
    difficult_skipped: int = 0
    clamped_boxes: int = 0
    clamped_examples: List[str] = field(default_factory=list)
    degenerate_dropped: List[str] = field(default_factory=list)
    empty_images: List[str] = field(default_factory=list)       # label file written empty
    missing_images: List[str] = field(default_factory=list)     # XML skipped: no image
    size_mismatches: List[str] = field(default_factory=list)
    size_from_image: int = 0

    @property
    def total_boxes(self) -> int:
        return int(self.class_counts.sum())

    def counts_by_name(self) -> Dict[str, int]:
        return {n: int(c) for n, c in zip(self.names, self.class_counts)}


def _expand_xml_sources(sources: Sequence[PathLike]) -> List[Path]:
    files: List[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".xml" and q.is_file())
            if not found:
                raise DataError("no .xml files in this folder", file=p)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError("annotation file or folder not found", file=p)
    if not files:
        raise UsageError("no annotation files given")
    return files


def _class_lookup(names: Sequence[str], name_map: Mapping[str, str]) -> Dict[str, int]:
    index = {n: i for i, n in enumerate(names)}
    for src, dst in name_map.items():
        if dst not in index:
            raise UsageError(f"--map {src}={dst}: '{dst}' is not a class in the names file "
                             f"(classes: {', '.join(names)})", value=dst)
    lookup = dict(index)
    lookup.update({src: index[dst] for src, dst in name_map.items()})
    return lookup


def _locate_image(ann: VocAnnotation, img_dir: Optional[Path], xml_path: Path,
                  missing_image: str, result: ConversionResult) -> Optional[Path]:
    """The image an XML describes; ``None`` (counted in ``missing_images``) when it is missing and
    ``missing_image`` is ``"skip"``, else a :class:`DataError` listing where it was looked for."""
    image = find_image(ann, img_dir)
    if image is not None:
        return image
    tried = list(_image_candidates(ann, img_dir))
    if missing_image == "skip":
        result.missing_images.append(str(xml_path))
        return None
    shown = ", ".join(str(t) for t in tried[:3])
    raise DataError(f"image '{ann.filename or xml_path.stem}' not found (looked for "
                    f"{shown}, ... ; pass --images-dir)", file=xml_path)


def _image_size(ann: VocAnnotation, image: Path, xml_path: Path, check_image_size: bool,
                result: ConversionResult) -> Tuple[int, int]:
    """Image size: the XML's ``<size>``, else the image file (``size_from_image``); with
    ``check_image_size`` a ``<size>`` that differs from the file is noted in ``size_mismatches``."""
    width, height = ann.width, ann.height
    if width is None or height is None:
        width, height = read_image_size(image)
        result.size_from_image += 1
    elif check_image_size:
        iw, ih = read_image_size(image)
        if (iw, ih) != (width, height):
            result.size_mismatches.append(
                f"{xml_path}: <size> {width}x{height} but {image} is {iw}x{ih}")
    return width, height


def _class_ids(ann: VocAnnotation, lookup: Mapping[str, int], class_names: Sequence[str],
               xml_path: Path, unknown: str, skip_difficult: bool, unknown_counts: Counter,
               result: ConversionResult) -> Tuple[np.ndarray, np.ndarray]:
    """Class id of every object (-1 where not kept) and which objects are kept: an unknown class
    is an error or skipped (``unknown``), a difficult object skipped with ``skip_difficult``."""
    keep = np.ones(len(ann.objects), dtype=bool)
    ids = np.full(len(ann.objects), -1, dtype=np.int64)
    for k, obj in enumerate(ann.objects):
        cid = lookup.get(obj.name)
        if cid is None:
            if unknown == "error":
                raise DataError(f"object {k + 1} has class '{obj.name}', which is not in the "
                                f"names file ({', '.join(class_names)}) and not mapped by "
                                "--map (or use --unknown skip)", file=xml_path, line=obj.line,
                                value=obj.name)
            unknown_counts[obj.name] += 1
            keep[k] = False
            continue
        if skip_difficult and obj.difficult:
            result.difficult_skipped += 1
            keep[k] = False
            continue
        ids[k] = cid
    return ids, keep


def _yolo_boxes(ann: VocAnnotation, keep: np.ndarray, width: int, height: int, xml_path: Path,
                voc_shift: bool, result: ConversionResult) -> Tuple[np.ndarray, np.ndarray]:
    """YOLO boxes of all objects and the new ``keep``: an inverted kept box is an error, clamped
    boxes are counted (a few kept as examples), boxes with no area inside the image dropped."""
    boxes = ann.boxes
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if np.any(inverted & keep):
        k = int(np.flatnonzero(inverted & keep)[0])
        o = ann.objects[k]
        raise DataError(f"object {k + 1} ('{o.name}') has xmax < xmin or ymax < ymin: "
                        f"{_fmt_box(o.box)}", file=xml_path, line=o.line, value=o.box)
    yolo, clamped = voc_to_yolo_boxes(boxes, width, height, clamp=True, voc_shift=voc_shift)
    degenerate = (yolo[:, 2] <= 0) | (yolo[:, 3] <= 0)
    for k in np.flatnonzero(clamped & keep):
        o = ann.objects[k]
        if len(result.clamped_examples) < 5:
            result.clamped_examples.append(
                f"{xml_path.name}:{o.line} {o.name} {_fmt_box(o.box)} in {width}x{height}")
    result.clamped_boxes += int(np.count_nonzero(clamped & keep))
    for k in np.flatnonzero(degenerate & keep):
        o = ann.objects[k]
        result.degenerate_dropped.append(
            f"{xml_path}:{o.line} {o.name} {_fmt_box(o.box)} (no area inside {width}x{height})")
    return yolo, keep & ~degenerate


def _write_label(image: Path, ids: np.ndarray, yolo: np.ndarray, xml_path: Path,
                 out: Optional[str], place: str, decimals: int,
                 listed_from: Dict[str, Path]) -> Tuple[str, str]:
    """Where the image is listed and where its label goes (placing the image in ``out``), then
    the label file written; returns ``(listed image path, label path)``."""
    if out is not None:
        listed = os.path.join(out, image.name)
    else:
        listed = os.path.abspath(os.fspath(image))
    if listed in listed_from:
        raise DataError(f"two annotations describe the same image {listed} (the other is "
                        f"{listed_from[listed]})", file=xml_path)
    listed_from[listed] = xml_path
    label = label_path_for_image(listed)
    if not label.endswith(".txt"):
        raise DataError(f"Darknet cannot derive a label file name for image '{listed}' "
                        f"(extension not one of {' '.join(DARKNET_IMAGE_EXTENSIONS)})",
                        file=xml_path)
    if out is not None:
        _place_image(os.path.abspath(os.fspath(image)), listed, place)
    os.makedirs(os.path.dirname(label) or ".", exist_ok=True)
    with open(label, "w", encoding="ascii", newline="\n") as f:
        f.write(format_yolo_lines(ids, yolo, decimals))
    return listed, label


def convert_voc_dataset(
    sources: Sequence[PathLike],
    names: Union[PathLike, Sequence[str]],
    name_map: Optional[Mapping[str, str]] = None,
    out_dir: Optional[PathLike] = None,
    images_dir: Optional[PathLike] = None,
    skip_difficult: bool = False,
    unknown: str = "error",
    missing_image: str = "error",
    voc_shift: bool = False,
    decimals: int = 6,
    place: str = "symlink",
    check_image_size: bool = True,
) -> ConversionResult:
    """Convert VOC XML files (or folders of them) to Darknet label files.

    ``names``: an ``obj.names`` path or the list of class names (class id = position).
    ``name_map``: XML name -> class name (see :data:`FACEMASK_NAME_MAP`); names not in the map are
    looked up as they are. ``unknown``: what to do with an object whose class is in neither:
    ``"error"`` (default, :class:`DataError` naming the file and line) or ``"skip"`` (counted in
    ``unknown_counts``). ``missing_image``: ``"error"`` or ``"skip"`` the XML.

    With ``out_dir`` each image is placed in it (``place``: symlink, hardlink or copy) and its label
    written next to it; without, labels go next to the original images (or into ``labels/`` for a
    ``JPEGImages`` folder), i.e. wherever :func:`label_path_for_image` says. An XML with no
    objects left writes an empty label file (a background image for Darknet) and is listed in
    ``empty_images``. Image size comes from ``<size>``; when that is missing, from the image file.
    With ``check_image_size`` the image header is read too and disagreements are reported in
    ``size_mismatches`` (the XML size is still used: the boxes were drawn in it).
    """
    if unknown not in ("error", "skip"):
        raise UsageError(f"unknown='{unknown}': expected 'error' or 'skip'", value=unknown)
    if missing_image not in ("error", "skip"):
        raise UsageError(f"missing_image='{missing_image}': expected 'error' or 'skip'",
                         value=missing_image)
    class_names = read_class_names(names) if isinstance(names, (str, os.PathLike)) else list(names)
    lookup = _class_lookup(class_names, dict(name_map or {}))
    xml_files = _expand_xml_sources(sources)
    img_dir = None if images_dir is None else Path(images_dir)
    if img_dir is not None and not img_dir.is_dir():
        raise DataError("images folder not found", file=img_dir)
    out: Optional[str] = None
    if out_dir is not None:
        out = os.path.abspath(os.fspath(out_dir))
        os.makedirs(out, exist_ok=True)

    result = ConversionResult(names=class_names, out_dir=out, xml_files=len(xml_files))
    nclass = len(class_names)
    all_ids: List[np.ndarray] = []
    presence = np.zeros(nclass, dtype=np.int64)
    xml_name_counts: Counter = Counter()
    unknown_counts: Counter = Counter()
    listed_from: Dict[str, Path] = {}

    for xml_path in xml_files:
        ann = parse_voc_xml(xml_path)
        xml_name_counts.update(ann.names)
        image = _locate_image(ann, img_dir, xml_path, missing_image, result)
        if image is None:
            continue
        width, height = _image_size(ann, image, xml_path, check_image_size, result)
        ids, keep = _class_ids(ann, lookup, class_names, xml_path, unknown, skip_difficult,
                               unknown_counts, result)
        yolo, keep = _yolo_boxes(ann, keep, width, height, xml_path, voc_shift, result)
        ids, yolo = ids[keep], yolo[keep]
        listed, label = _write_label(image, ids, yolo, xml_path, out, place, decimals,
                                     listed_from)
        if len(ids) == 0:
            result.empty_images.append(str(xml_path))
        all_ids.append(ids)
        presence += np.bincount(np.unique(ids), minlength=nclass)[:nclass]
        result.image_paths.append(listed)
        result.label_paths.append(label)

    ids_all = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
    result.class_counts = np.bincount(ids_all, minlength=nclass)
    result.images_per_class = presence
    result.xml_name_counts = dict(sorted(xml_name_counts.items()))
    result.unknown_counts = dict(sorted(unknown_counts.items()))
    return result


def _first_names(paths: Sequence[str], n: int = 5) -> str:
    """The file names of the first ``n`` paths, then " ..." when there are more."""
    return ", ".join(Path(p).name for p in paths[:n]) + (" ..." if len(paths) > n else "")


def format_report(result: ConversionResult) -> str:
    """Human-readable summary: per-class box and image counts, then anything unusual."""
    where = result.out_dir if result.out_dir is not None else "next to the images"
    lines = [f"converted {result.xml_files} XML files -> {len(result.label_paths)} label files "
             f"({where})"]
    width = max([len(n) for n in result.names] + [5])
    lines.append(f"  {'id':>3} {'class':<{width}} {'boxes':>7} {'images':>7}")
    for i, name in enumerate(result.names):
        lines.append(f"  {i:>3} {name:<{width}} {int(result.class_counts[i]):>7} "
                     f"{int(result.images_per_class[i]):>7}")
    lines.append(f"  {'':>3} {'total':<{width}} {result.total_boxes:>7} "
                 f"{len(result.label_paths):>7}")
    xml_total = sum(result.xml_name_counts.values())
    names = ", ".join(f"{k} {v}" for k, v in result.xml_name_counts.items())
    lines.append(f"XML objects: {xml_total} ({names})")
    if result.clamped_boxes:
        lines.append(f"clamped {result.clamped_boxes} boxes to the image, e.g. "
                     + "; ".join(result.clamped_examples[:3]))
    if result.degenerate_dropped:
        lines.append(f"dropped {len(result.degenerate_dropped)} boxes with no area: "
                     + "; ".join(result.degenerate_dropped[:3]))
    if result.unknown_counts:
        lines.append("skipped unknown classes: "
                     + ", ".join(f"{k} {v}" for k, v in result.unknown_counts.items()))
    if result.difficult_skipped:
        lines.append(f"skipped {result.difficult_skipped} difficult objects")
    if result.empty_images:
        lines.append(f"{len(result.empty_images)} images have no objects (empty label file = "
                     f"background): " + _first_names(result.empty_images))
    if result.missing_images:
        lines.append(f"skipped {len(result.missing_images)} XML files whose image is missing: "
                     + _first_names(result.missing_images))
    if result.size_from_image:
        lines.append(f"{result.size_from_image} XML files had no <size>: size read from the image")
    if result.size_mismatches:
        lines.append(f"warning: {len(result.size_mismatches)} XML sizes differ from the image "
                     "(XML size used): " + "; ".join(result.size_mismatches[:3]))
    return "\n".join(lines)
