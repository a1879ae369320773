"""ovss_ros: open-vocabulary semantic segmentation (PnP-OVSS on BLIP, PGSeg on GroupViT) for ROS 2 and plain
Python.

The engine (`engine/`, the face both methods implement; `pnp_ovss/` and `pgseg/`, the methods) imports no
rclpy. Typical use:

    from ovss_ros import Segmenter
    seg = Segmenter.from_pretrained("Salesforce/blip-itm-large-flickr", preset="realtime")
    seg.set_vocabulary(["person", "chair", "floor"])
    result = seg.segment(rgb)          # result.labels: H x W, 0 = background
    result = seg.segment_torch(frame)  # the tensor face: H x W x 3 uint8 tensor in, device tensors out

`Segmenter.from_pretrained` reads the method from the checkpoint: BLIP gives a PnpOvssSegmenter, GroupViT / PGSeg
a PGSegSegmenter; both are Segmenters with the same calls and result types.
"""
# The rosidl-generated `ovss_ros.msg` may live in another directory of the same name (a colcon install,
# or the dev venv); let Python find it there too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

_LAZY = {
    "Segmenter": "engine.segmenter", "SegmentationResult": "engine.result", "TensorResult": "engine.result",
    "ModelLoadError": "engine.loading", "VocabularyError": "engine.vocabulary", "ImageError": "engine.image_io",
    "PnpOvssSegmenter": "pnp_ovss.segmenter", "SegmenterConfig": "pnp_ovss.config", "make_config": "pnp_ovss.config",
    "PRESETS": "pnp_ovss.config", "load_blip": "pnp_ovss.model_loading",
    "PGSegSegmenter": "pgseg.segmenter", "PGSegConfig": "pgseg.config", "make_pgseg_config": "pgseg.config",
}


def _package_xml_version(path) -> "str | None":
    """<version> of an ovss_ros package.xml, or None if `path` is not one."""
    import re

    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return None
    if not re.search(r"<name>\s*ovss_ros\s*</name>", text):
        return None
    m = re.search(r"<version>\s*([^<\s]+)\s*</version>", text)
    return m.group(1) if m else None


def _version() -> str:
    """The version is written once, in package.xml (ROS convention; setup.py reads it too). Found in the
    source tree beside this package (checkouts, editable installs: never stale), else in the installed
    distribution's metadata (`pip install .`), else in an ament prefix's share/ovss_ros (colcon install)."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    found = _package_xml_version(os.path.join(here, os.pardir, "package.xml"))
    if found:
        return found
    from importlib import metadata

    try:
        return metadata.version("ovss_ros")
    except metadata.PackageNotFoundError:
        pass
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        found = _package_xml_version(os.path.join(prefix, "share", "ovss_ros", "package.xml"))
        if found:
            return found
    return "0+unknown"


def __getattr__(name):   # keep `import ovss_ros` cheap: torch loads on first use
    if name == "__version__":
        globals()["__version__"] = version = _version()
        return version
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
