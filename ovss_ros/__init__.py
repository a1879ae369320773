"""ovss_ros: open-vocabulary semantic segmentation (PnP-OVSS on BLIP) for ROS 2 and plain Python.

The engine (this package minus `ovss_ros.ros` and the `ovss_ros.demo` driver) imports no rclpy. Typical use:

    from ovss_ros import Segmenter
    seg = Segmenter.from_pretrained("Salesforce/blip-itm-large-flickr", preset="realtime")
    seg.set_vocabulary(["person", "chair", "floor"])
    result = seg.segment(rgb)          # result.labels: H x W, 0 = background
"""
# The rosidl-generated `ovss_ros.msg` may live in another directory of the same name (a colcon install,
# or the dev venv); let Python find it there too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"

_LAZY = {
    "Segmenter": "segmenter", "SegmentationResult": "result", "SegmenterConfig": "config",
    "make_config": "config", "PRESETS": "config", "load_blip": "model_loading",
    "ModelLoadError": "model_loading", "VocabularyError": "prompts", "ImageError": "image_io",
}


def __getattr__(name):   # keep `import ovss_ros` cheap: torch loads on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
