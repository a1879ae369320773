"""ovss_node: open-vocabulary segmentation of camera images as a (self-starting) lifecycle node.

The lifecycle contract (docs/ros_node.md has it as a table): configure reads the parameters, checks them
against the model's config and tokenizer, and creates the publishers, the vocabulary topic and service and
the worker; activate loads the model if it is not loaded and subscribes to the cameras; deactivate
unsubscribes and frees the model and its GPU memory; cleanup releases everything; shutdown does too and ends
the process when the node owns it. rclpy's state machine is the only record of the state. The node builds
the parts' collaborators (parts.py) once and wires the frame pipeline, vocabulary path and overlay thread."""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Optional

from .process_tuning import keep_large_buffers, one_malloc_arena, passive_openmp_wait, release_free_memory

passive_openmp_wait()   # before torch loads (process_tuning says why)
one_malloc_arena()      # before any thread starts (process_tuning says why)

import rclpy  # noqa: E402
import torch  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos_overriding_options import InvalidQosOverridesError
from rclpy.task import Future
from std_msgs.msg import String

from ovss_ros.srv import SetVocabulary

from . import diagnostics, outputs, qos
from .camera_inputs import CameraInputs
from .frame_pipeline import FramePipeline
from .output_size import SizeFollower, conflict as output_size_conflict
from .overlay_thread import OverlayPublisher
from .process_exit import EXECUTOR_WAIT, ExitDeadline, end_process
from .node_params import ParameterHandling, StartupError, add_post_set_callback, declare_all
from .knobs import KNOBS, load_help
from .parts import CameraOutputs, Counters, EngineSlot, NodeLog, NodeVocabularyParameter, Publishers, Runtime, Settings
from .stats import CameraStats
from .vocabulary_path import SERVICE_QOS, VocabularyPath
from .worker import Frame, LatestFrames, Worker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
DUPLICATE_WINDOW = 5.0      # s after start in which a twin with the same name makes this node leave
# s a twin may stay in the graph before it is an error: a leaving one can linger for its start window plus
# the DDS participant lease (Fast DDS: 20 s) when its process ends without announcing it
TWIN_LINGER = 60.0
EXECUTOR_THREADS = 4        # see main()


class OvssNode(ParameterHandling, LifecycleNode):
    def __init__(self, node_name: str = "ovss_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._specs = declare_all(self)
        # the parts' collaborators: built once, filled by configure and emptied by cleanup
        self.log = NodeLog(self.get_logger())
        self.settings = Settings(self._read_settings())
        self.runtime = Runtime(self.settings, self.log, self.get_clock())
        self.engine_slot = EngineSlot()         # EngineState from configure to cleanup
        self.output_publishers = Publishers()
        self.output_publishers.gate.close()   # opened by activate with the class maps (VocabularyPath)
        self.counters = Counters()
        self._vocabulary = VocabularyPath(self.engine_slot, self.output_publishers, self.runtime,
                                          NodeVocabularyParameter(self))
        self._group = ReentrantCallbackGroup()
        self.error: Optional[str] = None        # why the last transition failed, or a duplicate name
        self._inputs = CameraInputs(self, self._on_frame, self._group)
        self._follow = SizeFollower(self, self._group)   # output_size_from
        self._io: list = []                     # configure-time entities: vocabulary subs, service
        self.frames: Optional[LatestFrames] = None
        self._worker: Optional[Worker] = None
        self._overlays: Optional[OverlayPublisher] = None
        self._pipeline: Optional[FramePipeline] = None
        self._activated_at: Optional[float] = None
        self._torch_threads = torch.get_num_threads()   # as the worker thread sees it, once it runs
        self.finished = Future()                # done when the process should end (shutdown transition)
        self._started_at = time.monotonic()
        self._twin_timer = None
        self._twin_lock = threading.Lock()
        self._twin: Optional[dict] = None           # a same-name node seen: who, since when
        self._own_participants: Optional[set] = None   # this node's, read while it was alone
        self.exit_code = 0
        add_post_set_callback(self, self._after_set_parameters)   # before the validator: see its docstring
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_on_set_parameters_callback(self._follow.check_parameters)   # output_size with output_size_from
        # /diagnostics in every state, so a failed configure is seen where operators look
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics, callback_group=self._group)

    # -- helpers --------------------------------------------------------------------------------
    def p(self, name: str):
        return self.get_parameter(name).value

    def lifecycle_state(self) -> str:
        """rclpy's own state label: unconfigured, inactive, active, finalized, or a transition's."""
        return self._state_machine.current_state[1]

    @property
    def engine(self):
        return self.engine_slot.engine

    def warn_once(self, key: tuple, text: str) -> None:
        self.log.warn_once(key, text)

    # -- lifecycle ------------------------------------------------------------------------------
    def _guarded(self, name: str, body) -> TransitionCallbackReturn:
        """rclpy swallows exceptions raised in transition callbacks; report them and fail the transition."""
        try:
            result = body()
        except Exception as exc:   # noqa: BLE001
            self.error = f"{name} failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{self.error}\n{traceback.format_exc()}")
            result = FAILURE
        return result

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("configure", self._configure)
        if result != SUCCESS:
            self._teardown()
        return result

    def _configure(self) -> TransitionCallbackReturn:
        from ovss_ros.engine.loading import ModelLoadError

        from .engine_state import EngineState

        problem = (self.configure_problem()   # values given at start never met the on-set check
                   or output_size_conflict(self.p("output_size"), self.p("output_size_from")))
        if problem:
            return self._fail(f"parameter refused: {problem}")
        method = self.p("method")
        try:   # the method's checker: a checkpoint of the other kind is one error naming both
            checker = KNOBS[method].checker(self.p("model"), self.p("local_files_only") or None, self.p("dtype"))
            self.engine_slot.engine = EngineState(checker, self.unconfigured_config())
        except (ModelLoadError, OSError) as exc:
            return self._fail(f"{str(exc).rstrip('. ')}. {load_help(method)}")
        except ValueError as exc:
            return self._fail(f"engine parameters do not fit model {self.p('model')!r}: {exc}")
        self.error = None
        if outputs.LABEL_INFO_MISSING:
            self.warn_once(("vision_msgs",), outputs.LABEL_INFO_MISSING)
        self.frames = LatestFrames()
        self._overlays = OverlayPublisher(self.output_publishers, self.counters.latency, self.log)
        self._pipeline = FramePipeline(self.engine, self.output_publishers, self.runtime, self.counters, self._overlays,
                                       self._follow)
        self._worker = Worker(self.frames, self._pipeline, self._pipeline.on_error, setup=self._worker_setup)
        self._worker.start()
        self._overlays.start()
        for cam in self.p("cameras"):
            try:   # rclpy reads the qos_overrides.<topic>.publisher.* parameters here, and refuses bad ones
                self.output_publishers.cameras[cam] = self._create_outputs(cam)
            except (InvalidQosOverridesError, RuntimeError) as exc:
                return self._fail(f"parameter refused: qos_overrides for camera {cam!r}: {exc}")
            self.counters.cameras[cam] = CameraStats(self.p("diagnostics_window"))
        self._vocabulary.start(self.frames)
        # The vocabulary topic: transient local catches a vocabulary published before we started; the volatile
        # twin also hears plain `ros2 topic pub` publishers (a transient-local reader ignores volatile writers).
        # Their callbacks and the service's only record requests, numbered in the order the executor took them
        # (vocabulary_path.TakeOrder); the service's request queue holds bursts (SERVICE_QOS, depth 1000).
        group = self._vocabulary.group
        for profile in (qos.latched(), qos.reliable(1)):
            self._io.append(("subscription", self.create_subscription(
                String, "vocabulary", self._vocabulary.on_topic, profile, callback_group=group)))
        self._io.append(("service", self.create_service(SetVocabulary, "set_vocabulary", self._vocabulary.on_service,
                                                        qos_profile=SERVICE_QOS, callback_group=group)))
        self._io.append(("timer", self.create_timer(0.5, self._inputs.check_publishers, callback_group=self._group)))
        return SUCCESS

    def _fail(self, reason: str) -> TransitionCallbackReturn:
        self.error = reason
        self.get_logger().error(reason)
        return FAILURE

    def _create_outputs(self, cam: str) -> CameraOutputs:
        return outputs.create_camera_outputs(self.create_lifecycle_publisher, cam)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("activate", self._activate)
        if result != SUCCESS:
            return result
        result = super().on_activate(state)   # enables the lifecycle publishers
        self._vocabulary.publish_class_maps(reopen=True)
        return result

    def _activate(self) -> TransitionCallbackReturn:
        from ovss_ros.engine.loading import ModelLoadError
        from ovss_ros.engine.segmenter import Segmenter

        method = self.p("method")
        if self.engine.segmenter is None:
            try:
                seg = Segmenter.from_pretrained(self.p("model"), method=method,
                                                preset=KNOBS[method].preset(self.p("preset")), device=self.p("device"),
                                                dtype=self.p("dtype"),
                                                local_files_only=self.p("local_files_only") or None,
                                                **self.engine.config.to_dict())
            except (ModelLoadError, ValueError, OSError, RuntimeError) as exc:
                return self._fail(f"{str(exc).rstrip('. ')}. {load_help(method)}")
            self.engine.attach(seg)
            self.get_logger().info(f"model {self.p('model')!r} loaded on {seg.device} (method {method}, preset "
                                   f"{self.p('preset')})")
        self.error = None
        self._inputs.open(list(self.p("cameras")), self.p("input_transport"), self.p("qos.input_reliability"))
        self._follow.open(list(self.p("cameras")), self.p("output_size_from"))
        self._activated_at = time.monotonic()
        self.get_logger().info(f"active: cameras {list(self.p('cameras'))}, input {self.p('input_transport')}")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._inputs.close()
        self._follow.close()
        self._activated_at = None
        if self.frames is not None:
            self.frames.clear()
        if self._overlays is not None:
            self._overlays.clear()
        self.output_publishers.gate.close()
        self.engine.release()   # waits for a frame in progress, then frees the (GPU) memory
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown(wait=False)
        if not self.finished.done():
            self.finished.set_result(True)
        return SUCCESS

    def _teardown(self, wait: bool = True) -> None:
        """Release everything; wait=False abandons a frame in flight (the process is ending)."""
        self._inputs.close()
        self._follow.close()
        self._activated_at = None
        self.output_publishers.gate.close(1.0 if wait else 0.0)   # exiting: a publish under way ends, none starts
        self._vocabulary.stop()   # answers a pending request; one with the worker ends when it stops
        if self._worker is not None:
            self._worker.stop(10.0 if wait else 0.0)   # exiting: a frame still running is abandoned, not joined
            self._worker = None
        if self._overlays is not None:
            self._overlays.stop(2.0 if wait else 0.0)
            self._overlays = None
        self._pipeline = None
        if self.engine is not None:
            if wait:   # when the process is ending, freeing the model only delays the exit
                self.engine.release()
            self.engine_slot.engine = None
        self.frames = None
        for kind, ent in self._io:
            getattr(self, f"destroy_{kind}")(ent)
        self._io = []
        self.output_publishers.release(self.destroy_lifecycle_publisher)
        self.counters.cameras.clear()   # a later configure may name other cameras: /diagnostics lists only those
        if wait:
            release_free_memory()   # what the worker and overlay threads' arenas held (process_tuning)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_frame(self, camera: str, msg) -> None:
        frames = self.frames
        if frames is not None and self.counters.received(camera):
            frames.put(Frame(camera, msg))   # the worker does everything else

    def _worker_setup(self) -> None:
        """Worker thread, once: torch's CPU thread count holds for the thread that sets it."""
        if self.p("torch_threads") > 0:
            torch.set_num_threads(self.p("torch_threads"))
        self._torch_threads = torch.get_num_threads()

    # -- diagnostics ----------------------------------------------------------------------------
    def _duplicates(self) -> int:
        me = (self.get_name(), self.get_namespace())
        return sum(1 for n in self.get_node_names_and_namespaces() if tuple(n) == me)

    def _participants(self) -> set:
        """DDS participants (GUID prefixes, as `ros2 topic info -v` prints endpoint GIDs) with a node of this
        node's name: every node publishes /rosout."""
        return {".".join(f"{b:02x}" for b in bytes(info.endpoint_gid)[:12])
                for info in self.get_publishers_info_by_topic("/rosout")
                if (info.node_name, info.node_namespace) == (self.get_name(), self.get_namespace())}

    def _check_duplicate_name(self) -> None:
        """Two nodes with one name: the one that just started leaves (its twin has been running longer than
        discovery takes). The one that was there keeps serving: it warns once when a twin appears, naming the
        twin's DDS participant, and says when it left; only a twin still there after TWIN_LINGER (one that
        does not leave by itself) is an error."""
        if not self._twin_lock.acquire(blocking=False):   # the twin timer and /diagnostics both call this
            return
        try:
            self._check_twin(time.monotonic())
        finally:
            self._twin_lock.release()

    def _check_twin(self, now: float) -> None:
        young = now - self._started_at < DUPLICATE_WINDOW
        if not young and self._twin_timer is not None:
            # destroyed, not cancelled: Jazzy's executor raises (and the node dies) when another thread has
            # the timer ready at that moment; a destroyed one it skips (Kilted skips either)
            self.destroy_timer(self._twin_timer)
            self._twin_timer = None
        name = self.get_fully_qualified_name()
        if self._duplicates() < 2:
            if self._own_participants is None:   # read once, when our own endpoints show in the graph
                self._own_participants = self._participants() or None
            if self._twin is not None:
                self.get_logger().info(f"the other node named {name} ({self._twin['who']}) has left")
                self._twin = None
            if (self.error or "").startswith("another node"):
                self.error = None
            return
        if young:
            self._exit(1, f"another node named {name} is already running; not "
                          "starting a second one. Give this one another name (-r __node:=NAME) or namespace")
            return
        if self._twin is None:
            others = self._participants() - (self._own_participants or set())
            who = (f"DDS participant {', '.join(sorted(others))}" if others and self._own_participants is not None
                   else "participant unknown")
            self._twin = {"who": who, "since": now}
            self.get_logger().warning(
                f"another node named {name} appeared ({who}); a node that finds its name taken at start leaves "
                f"within {DUPLICATE_WINDOW:g} s, and this one keeps serving. Give one of them another name "
                "(-r __node:=NAME) or namespace")
        elif now - self._twin["since"] > TWIN_LINGER and not (self.error or "").startswith("another node"):
            self.error = (f"another node named {name} ({self._twin['who']}) is running: parameters, services "
                          "and lifecycle requests reach either one. Give one of them another name "
                          "(-r __node:=NAME) or namespace")
            self.get_logger().error(self.error)

    def _publish_diagnostics(self) -> None:
        self._check_duplicate_name()
        engine = self.engine
        seg = engine.segmenter if engine is not None else None
        info = {"device": str(seg.device) if seg is not None else "released", "model": self.settings.values["model"],
                "method": self.p("method"), "preset": self.p("preset"), **diagnostics.vocabulary_values(engine),
                "duplicate_frames": self._inputs.duplicates, "torch_threads": self._torch_threads,
                "error": self.error, **diagnostics.batch_values(self._pipeline)}
        name = self.get_fully_qualified_name()
        statuses = [diagnostics.engine_status(name, self.lifecycle_state(), info, self.counters.latency.summary())]
        statuses += diagnostics.camera_statuses(name, self.counters, self.frames, self._inputs, self._overlays,
                                                self.p("diagnostics_window"), self._activated_at, time.monotonic())
        self._diag_pub.publish(diagnostics.build(self.get_clock().now().to_msg(), statuses))

    # -- process --------------------------------------------------------------------------------
    def start(self) -> None:
        """Executor task at start: configure and activate if autostart. A twin with the same name is looked for
        meanwhile, every 0.2 s during the first DUPLICATE_WINDOW seconds (then with each /diagnostics)."""
        self._twin_timer = self.create_timer(0.2, self._check_duplicate_name, callback_group=self._group)
        if self.p("autostart") and not self.finished.done():
            if self.trigger_configure() != SUCCESS:
                self._exit(1, f"cannot start, exiting with status 1: {self.error}")
            elif not self.finished.done() and self.trigger_activate() != SUCCESS:
                self._exit(1, f"cannot activate, exiting with status 1: {self.error}")

    def _exit(self, code: int, message: str) -> None:
        if self.finished.done():
            return
        print(f"ovss_node: {message}", file=sys.stderr, flush=True)
        self.exit_code = code
        if not self.finished.done():
            self.finished.set_result(True)


def main(argv=None) -> int:
    keep_large_buffers()   # per-message page faults otherwise dominate what the node adds to a frame
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = OvssNode()
    except StartupError as exc:
        print(f"ovss_node: cannot start: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    # two threads may sit in set_vocabulary calls waiting for their answer (the one being applied, the newest
    # pending); the rest keep frames, timers and parameters moving
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    executor.create_task(node.start)
    try:
        executor.spin_until_future_complete(node.finished)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:   # noqa: BLE001 - a signal can shut the context down in the middle of a wait
        if rclpy.ok():
            node.exit_code = 1   # a real failure: the exit deadline must not end the process with 0
            raise
    finally:   # within EXIT_BUDGET, whatever hangs (process_exit says where the time went and why)
        ExitDeadline(lambda: node.exit_code).start()
        node._teardown(wait=False)   # SIGINT/SIGTERM mid-frame: abandon the frame, publish nothing
        executor.shutdown(timeout_sec=EXECUTOR_WAIT)
        node.destroy_node()
        rclpy.try_shutdown()
    end_process(node.exit_code)   # not the interpreter's exit: torch may still be inside the frame


if __name__ == "__main__":
    sys.exit(main())
