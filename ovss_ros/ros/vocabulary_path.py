"""The one path of a vocabulary: the `vocabulary` topic, parameter and `set_vocabulary` service all end here.

A request is checked when it arrives (on the caller's thread, against the model's tokenizer and the engine
settings), then handed to the worker, which applies the newest one between frames, publishes the class map
and sets the `vocabulary` parameter to what is in use, so `ros2 param get` never shows anything else."""
from __future__ import annotations

import threading
from typing import Optional

from rclpy.parameter import Parameter
from std_msgs.msg import String

from ovss_ros.msg import ClassMap
from ovss_ros.prompts import VocabularyError, normalize_vocabulary

from . import outputs
from .vocabulary import VocabularyTextError, parse_vocabulary_text, vocabulary_names
from .worker import Change

SERVICE_WAIT = 30.0         # how long set_vocabulary waits for its change to be applied


class VocabularyPath:
    def __init__(self, node) -> None:
        self.node = node
        self._mirroring = threading.local()   # set while the vocabulary parameter is written to mirror the engine

    @property
    def mirroring(self) -> bool:
        return getattr(self._mirroring, "on", False)

    def check(self, names, source: str, config=None) -> tuple:
        """Checked names, or VocabularyError (logged once per distinct reason)."""
        try:
            if not names:
                raise VocabularyError("vocabulary is empty")
            if self.node.engine is not None:
                return self.node.engine.checker.check_vocabulary(list(names), config or self.node.engine.config)
            cfg = config or self.node.unconfigured_config()   # unconfigured: the model is not known yet
            return normalize_vocabulary(list(names), cfg.max_classes, cfg.max_class_name_length)
        except VocabularyError as exc:
            self.node.warn_once(("vocabulary", source, str(exc)), f"vocabulary from {source} refused: {exc}")
            raise

    def submit(self, names: tuple, source: str) -> Optional[Change]:
        """Hand a checked vocabulary to the worker; a newer one replaces it if the worker has not taken it."""
        if self.node.frames is None:
            return None
        return self.node.frames.put_change(Change("vocabulary", lambda: self.apply(names, source)))

    def apply(self, names: tuple, source: str) -> bool:
        """Worker thread: the one place a vocabulary takes effect."""
        try:
            changed = self.node.engine.apply_vocabulary(names)
        except ValueError as exc:   # checked under settings that changed since: keep the one in use
            self.node.warn_once(("vocabulary", source, str(exc)), f"vocabulary from {source} refused: {exc}")
            self.mirror()
            raise
        if changed:
            self.node.get_logger().info(f"vocabulary v{self.node.engine.version} from {source}: {list(self.node.engine.names)}")
            self.publish_class_maps()
        self.mirror()
        return changed

    def mirror(self) -> None:
        """Keep `ros2 param get vocabulary` equal to the vocabulary in use, without re-applying it."""
        names = list(self.node.engine.names) if self.node.engine is not None else []
        if vocabulary_names(self.node.p("vocabulary")) == names:
            return
        self._mirroring.on = True
        try:
            self.node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, names or [""])])
        finally:
            self._mirroring.on = False

    def apply_initial(self) -> None:
        names = vocabulary_names(self.node.p("vocabulary"))
        if not names:
            return
        try:
            self.submit(self.check(names, "parameter"), "parameter")
        except ValueError:
            self.mirror()   # refused: the parameter shows what is in use (nothing)

    def on_topic(self, msg: String) -> None:
        try:
            names = self.check(parse_vocabulary_text(msg.data), "topic")
        except VocabularyTextError as exc:
            self.node.warn_once(("vocabulary", "topic", str(exc)), f"vocabulary from topic refused: {exc}")
            return
        except ValueError:
            return   # logged once by _check_vocabulary
        self.submit(names, "topic")

    def on_service(self, request, response):
        response.success, response.message = False, ""
        try:
            change = self.submit(self.check(list(request.classes), "service"), "service")
        except ValueError as exc:
            response.message = str(exc)
            change = None
        if change is not None:
            if not change.done.wait(SERVICE_WAIT):
                response.success, response.message = True, "accepted; still being applied"
            elif change.superseded:
                response.success, response.message = True, "accepted; a newer vocabulary replaced it"
            elif isinstance(change.outcome, Exception):
                response.message = str(change.outcome)
            else:
                response.success = True
                response.message = (f"vocabulary version {self.node.engine.version}: {len(self.node.engine.names)} classes"
                                    if change.outcome else "unchanged")
        engine = self.node.engine
        response.vocabulary_version = engine.version if engine is not None else 0
        response.class_names = list(engine.names) if engine is not None else []
        return response

    def publish_class_maps(self) -> None:
        engine = self.node.engine
        if engine is None or not engine.version:
            return
        with self.node.gate as open_:
            if not open_:
                return   # inactive: published again on activate
            header = ClassMap().header
            header.stamp = self.node.get_clock().now().to_msg()
            threshold = self.node.settings["presence_threshold"]
            for outs in list(self.node.camera_outputs.values()):
                outs.class_map.publish(outputs.class_map_message(engine.names, engine.version, header, threshold,
                                                                 self.node.settings["model"]))
                if outs.label_info is not None:
                    outs.label_info.publish(outputs.label_info_message(engine.names, header, threshold))
