"""ovss_node: open-vocabulary segmentation of camera images as a (self-starting) lifecycle node.

configure loads the model and opens vocabulary/outputs/diagnostics; activate subscribes to the cameras;
deactivate unsubscribes and frees the model (GPU memory); by default the node runs both transitions itself."""
from __future__ import annotations

import sys
import threading
import traceback
from typing import Optional

import rclpy
import torch
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ovss_ros.msg import ClassMap, SegmentationMasks
from ovss_ros.srv import SetVocabulary

from . import diagnostics, outputs, qos
from .camera_inputs import RELIABILITY_MODES, CameraInputs, topic
from .engine_state import EngineState
from .frame_pipeline import CameraOutputs, FramePipeline
from .params import ACTIVATE, CONFIGURE, ENGINE_PREFIX, RUNTIME, START, all_specs, engine_fields, ros_to_engine
from .stats import CameraStats, StageLatency
from .vocabulary import VocabularyTextError, parse_vocabulary_text, vocabulary_names
from .worker import Frame, LatestFrames, Worker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
LOAD_HELP = ("What to do: set the `model` parameter to a BLIP ITM checkpoint that is in the local Hugging Face "
             "cache or to a local directory (--ros-args -p model:=/path/to/checkpoint), and `device` to one that "
             "exists (auto, cpu, cuda:0)")


_CHOICES = {"input_transport": ("raw", "compressed"), "qos.input_reliability": RELIABILITY_MODES,
            "qos.output_reliability": ("best_effort", "reliable")}


class OvssNode(LifecycleNode):
    def __init__(self, node_name: str = "ovss_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._specs = {}
        preset = self.declare_parameter("preset", "realtime",
                                        ParameterDescriptor(read_only=True)).value
        for spec in all_specs(preset):
            self._specs[spec.name] = spec
            if spec.name != "preset":   # vocabulary: a string array, or one "a, b" string (launch args, YAML)
                self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                    description=spec.description, dynamic_typing=spec.name == "vocabulary"))
        self.engine = EngineState()
        self.state = "unconfigured"
        self.load_error: Optional[str] = None
        self._warned: set = set()
        self._warn_lock = threading.Lock()
        self._group = ReentrantCallbackGroup()
        self._camera_outputs: dict = {}
        self._camera_stats: dict = {}
        self._inputs = CameraInputs(self, self._on_frame, self._group)
        self._io: list = []              # configure-time entities: vocabulary subs, service, diagnostics
        self._frames: Optional[LatestFrames] = None
        self._worker: Optional[Worker] = None
        self._latency = StageLatency()
        self._settings = self._read_settings()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- helpers --------------------------------------------------------------------------------
    def p(self, name: str):
        return self.get_parameter(name).value

    def warn_once(self, key: tuple, text: str) -> None:
        with self._warn_lock:
            if key in self._warned:
                return
            if len(self._warned) > 1000:   # distinct reasons (e.g. vocabulary texts) must not grow memory
                self._warned.clear()
            self._warned.add(key)
        self.get_logger().warning(text)

    def _read_settings(self, changed: Optional[dict] = None) -> dict:
        """Snapshot of the runtime values the worker reads per frame (one dict swap, no locking needed)."""
        names = [s.name for s in self._specs.values() if s.when == RUNTIME and not s.name.startswith(ENGINE_PREFIX)]
        s = {n: self.p(n) for n in names}
        s["max_image_pixels"] = self.p(ENGINE_PREFIX + "max_image_pixels")
        s["presence_threshold"] = self.p(ENGINE_PREFIX + "presence_threshold")
        s["model"] = self.p("model")
        for k, v in (changed or {}).items():
            s[k[len(ENGINE_PREFIX):] if k.startswith(ENGINE_PREFIX) else k] = v
        return s

    def _engine_overrides(self) -> dict:
        return {n: ros_to_engine(n, self.p(ENGINE_PREFIX + n)) for n in engine_fields()}

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- model ----------------------------------------------------------------------------------
    def _load_model(self) -> bool:
        from ovss_ros.model_loading import ModelLoadError
        from ovss_ros.segmenter import Segmenter

        if self.p("torch_threads") > 0:
            torch.set_num_threads(self.p("torch_threads"))
        try:
            seg = Segmenter.from_pretrained(self.p("model"), preset=self.p("preset"), device=self.p("device"),
                                            dtype=self.p("dtype"),
                                            local_files_only=True if self.p("local_files_only") else None,
                                            **self._engine_overrides())
        except (ModelLoadError, ValueError, OSError, RuntimeError) as exc:
            self.load_error = f"{str(exc).rstrip('. ')}. {LOAD_HELP}"
            self.get_logger().error(f"model load failed: {self.load_error}")
            return False
        self.load_error = None
        self.get_logger().info(f"model {self.p('model')!r} loaded on {seg.device} (preset {self.p('preset')})")
        error = self.engine.attach(seg)
        if error:
            self.warn_once(("vocabulary", error), f"vocabulary refused: {error}")
        return True

    # -- lifecycle ------------------------------------------------------------------------------
    def _guarded(self, name: str, body) -> TransitionCallbackReturn:
        """rclpy swallows exceptions raised in transition callbacks; log them and fail the transition."""
        try:
            return body()
        except Exception as exc:   # noqa: BLE001
            self.load_error = self.load_error or f"{name} failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{name} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            return FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("configure", self._configure)
        if result != SUCCESS:
            self._teardown()
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("activate", self._activate)
        return super().on_activate(state) if result == SUCCESS else result

    def _configure(self) -> TransitionCallbackReturn:
        if not self._load_model():
            return FAILURE
        vocab = vocabulary_names(self.p("vocabulary"))
        if vocab:
            self.set_vocabulary(vocab, "parameter")
        out_depth = self.p("qos.output_depth")
        # The vocabulary topic: transient local catches a vocabulary published before we started; the volatile
        # twin also hears plain `ros2 topic pub` publishers (a transient-local reader ignores volatile writers).
        for profile in (qos.latched(), qos.reliable(1)):
            self._io.append(("subscription", self.create_subscription(
                String, "vocabulary", self._on_vocabulary_msg, profile, callback_group=self._group)))
        self._io.append(("service", self.create_service(SetVocabulary, "set_vocabulary", self._on_vocabulary_srv,
                                                        callback_group=self._group)))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._io += [("publisher", self._diag_pub),
                     ("timer", self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics,
                                                 callback_group=self._group)),
                     ("timer", self.create_timer(1.0, self._inputs.check_publishers, callback_group=self._group))]
        self._out_qos = qos.outputs(self.p("qos.output_reliability"), out_depth)
        self._frames = LatestFrames()
        pipeline = FramePipeline(self.engine, self._camera_stats, self._latency, self._outputs_for,
                                 lambda: self._settings, self._now, self.warn_once)
        self._worker = Worker(self._frames, pipeline, self._on_worker_error)
        self._worker.start()
        self.state = "inactive"
        return SUCCESS

    def _activate(self) -> TransitionCallbackReturn:
        if self.engine.segmenter is None and not self._load_model():
            return FAILURE
        cameras = list(self.p("cameras"))
        for cam in cameras:
            self._outputs_for(cam)
            self._camera_stats.setdefault(cam, CameraStats())
        self._inputs.open(cameras, self.p("input_transport"), self.p("qos.input_reliability"),
                          self.p("qos.input_depth"))
        self.state = "active"
        self.get_logger().info(f"active: cameras {list(self.p('cameras'))}, input {self.p('input_transport')}")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.state = "inactive"
        self._inputs.close()
        if self._frames is not None:
            self._frames.clear()
        self.engine.release()   # waits for a frame in progress, then frees the (GPU) memory
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.state = "unconfigured"
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.state = "finalized"
        return SUCCESS

    def _teardown(self) -> None:
        self._inputs.close()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.engine.release()
        for kind, ent in self._io:
            getattr(self, f"destroy_{kind}")(ent)
        self._io = []
        for outs in self._camera_outputs.values():
            for pub in vars(outs).values():
                if pub is not None:
                    self.destroy_publisher(pub)
        self._camera_outputs = {}

    # -- inputs ---------------------------------------------------------------------------------
    def _on_frame(self, camera: str, msg) -> None:
        if self.state != "active" or self._frames is None:
            return
        self._camera_stats[camera].input_rate.tick()
        self._frames.put(Frame(camera, msg))   # the worker does everything else

    def _on_worker_error(self, frame: Frame, exc: BaseException) -> None:
        self.warn_once((frame.camera, "error", type(exc).__name__),
                       f"camera '{frame.camera}': frame failed and was skipped: {type(exc).__name__}: {exc}")

    def _outputs_for(self, cam: str) -> CameraOutputs:
        outs = self._camera_outputs.get(cam)
        if outs is None:
            q = self._out_qos
            outs = CameraOutputs(
                labels=self.create_publisher(Image, topic(cam, "segmentation/labels"), q),
                confidence=self.create_publisher(Image, topic(cam, "segmentation/confidence"), q),
                overlay=self.create_publisher(Image, topic(cam, "segmentation/overlay"), q),
                masks=self.create_publisher(SegmentationMasks, topic(cam, "segmentation/masks"), q),
                class_map=self.create_publisher(ClassMap, topic(cam, "segmentation/class_map"), qos.latched()),
                label_info=(self.create_publisher(outputs.LabelInfo, topic(cam, "segmentation/label_info"),
                                                  qos.latched()) if outputs.LabelInfo is not None else None))
            self._camera_outputs[cam] = outs
            if self.engine.version:
                self._publish_class_map(outs)
        return outs

    # -- vocabulary: topic, parameter and service all end here ----------------------------------
    def set_vocabulary(self, names, source: str) -> tuple[bool, str]:
        from ovss_ros.prompts import VocabularyError

        try:
            changed, message = self.engine.set_vocabulary(names)
        except VocabularyError as exc:
            self.warn_once(("vocabulary", source, str(exc)), f"vocabulary from {source} refused: {exc}")
            return False, str(exc)
        if changed:
            self.get_logger().info(f"vocabulary v{self.engine.version} from {source}: {list(self.engine.names)}")
            for outs in list(self._camera_outputs.values()):
                self._publish_class_map(outs)
            if source != "parameter":   # keep `ros2 param get vocabulary` truthful; the callback sees no change
                self.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, list(self.engine.names))])
        return True, message

    def _publish_class_map(self, outs: CameraOutputs) -> None:
        header = ClassMap().header
        header.stamp = self.get_clock().now().to_msg()
        args = (self.engine.names, header, self._settings["presence_threshold"])
        outs.class_map.publish(outputs.class_map_message(args[0], self.engine.version, header, args[2],
                                                         self._settings["model"]))
        if outs.label_info is not None:
            outs.label_info.publish(outputs.label_info_message(*args))

    def _on_vocabulary_msg(self, msg: String) -> None:
        try:
            names = parse_vocabulary_text(msg.data)
        except VocabularyTextError as exc:
            self.warn_once(("vocabulary", "topic", str(exc)), f"vocabulary from topic refused: {exc}")
            return
        self.set_vocabulary(names, "topic")

    def _on_vocabulary_srv(self, request, response):
        response.success, response.message = self.set_vocabulary(list(request.classes), "service")
        response.vocabulary_version = self.engine.version
        response.class_names = list(self.engine.names)
        return response

    # -- parameters -----------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        engine_changes, vocabulary, changed = {}, None, {}
        for prm in params:
            spec = self._specs.get(prm.name)
            if spec is None:
                continue
            if spec.when == START:
                return SetParametersResult(successful=False, reason=f"{prm.name} is read at start only")
            if spec.when == CONFIGURE and self.state in ("inactive", "active"):
                return SetParametersResult(successful=False, reason=f"{prm.name} is used at configure: "
                                           "deactivate and clean up the node first, or restart it")
            if spec.when == ACTIVATE and self.state == "active":
                return SetParametersResult(successful=False, reason=f"{prm.name} is used at activate: "
                                           "deactivate the node first, or restart it")
            if prm.name in _CHOICES and prm.value not in _CHOICES[prm.name]:
                return SetParametersResult(successful=False, reason=f"{prm.name}={prm.value!r}: expected one of "
                                           f"{_CHOICES[prm.name]}")
            if prm.name == "overlay_alpha" and not 0.0 <= prm.value <= 1.0:
                return SetParametersResult(successful=False, reason="overlay_alpha must be in [0, 1]")
            if prm.name.startswith(ENGINE_PREFIX):
                engine_changes[prm.name[len(ENGINE_PREFIX):]] = ros_to_engine(prm.name[len(ENGINE_PREFIX):],
                                                                              prm.value)
            elif prm.name == "vocabulary":
                try:
                    vocabulary = vocabulary_names(prm.value)
                except (VocabularyTextError, TypeError) as exc:
                    return SetParametersResult(successful=False, reason=f"vocabulary: {exc}")
            changed[prm.name] = prm.value
        if engine_changes:
            error = self._apply_engine_changes(engine_changes)
            if error:
                return SetParametersResult(successful=False, reason=error)
        if vocabulary and self.state != "unconfigured":
            ok, message = self.set_vocabulary(vocabulary, "parameter")
            if not ok:
                return SetParametersResult(successful=False, reason=message)
        self._settings = self._read_settings(changed)
        return SetParametersResult(successful=True)

    def _apply_engine_changes(self, changes: dict) -> Optional[str]:
        from ovss_ros.config import make_config

        try:
            with self.engine.lock:
                if self.engine.segmenter is not None:
                    self.engine.segmenter.update_config(**changes)
                else:   # validate now; the values are used at the next load
                    make_config(self.p("preset"), **{**self._engine_overrides(), **changes})
        except ValueError as exc:
            return f"engine parameter refused: {exc}"
        return None

    # -- diagnostics ----------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        seg = self.engine.segmenter
        engine = {"device": str(seg.device) if seg is not None else "released", "model": self._settings["model"],
                  "preset": self.p("preset"), "vocabulary_version": self.engine.version,
                  "vocabulary": ", ".join(self.engine.names), "text_preparations": self.engine.preparations,
                  "torch_threads": torch.get_num_threads(), "error": self.load_error}
        cams = {}
        for cam, st in list(self._camera_stats.items()):
            frames = self._frames
            cams[cam] = {"received": frames.received.get(cam, 0) if frames else 0,
                         "dropped": frames.dropped.get(cam, 0) if frames else 0,
                         "processed": st.processed, "stale": st.stale, "bad": st.bad,
                         "no_vocabulary": st.no_vocabulary, "input_hz": st.input_rate.rate(),
                         "output_hz": st.output_rate.rate(), "stamp_to_output_s": st.last_age,
                         "input_reliability": self._inputs.reliability().get(cam, "")}
        self._diag_pub.publish(diagnostics.build(self.get_clock().now().to_msg(), self.get_fully_qualified_name(),
                                                 self.state, engine, cams, self._latency.means()))


def main(argv=None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = OvssNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        if node.p("autostart"):
            if node.trigger_configure() != SUCCESS:
                print(f"ovss_node: cannot start, exiting with status 1 (reason logged above). {LOAD_HELP}",
                      file=sys.stderr)
                code = 1
            elif node.trigger_activate() != SUCCESS:
                print("ovss_node: cannot activate, exiting with status 1 (reason logged above)", file=sys.stderr)
                code = 1
        if code == 0:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._teardown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
