"""The TensorRT backend: Polygraphy loaders build an engine per plan, Polygraphy's ``TrtRunner`` runs it.

Two modes:

- ``explicit`` (TensorRT >= 10; the only mode of TensorRT 11): the plan's Q/DQ ONNX is parsed into a
  *strongly typed* network, so the Q/DQ nodes alone decide which layers run INT8. What is measured is what
  ``trtexec --stronglyTyped`` builds from ``plan.onnx``.
- ``implicit`` (TensorRT 10 only): the prepared FP32 model is built with the INT8 builder flag, a Polygraphy
  ``Calibrator`` fed by the sweep's calibration feeds (cache file in the sweep's cache folder), and FP32
  precision and output types on the TensorRT layers of the pinned ONNX nodes, with precision constraints
  obeyed. TensorRT still picks the precision of unpinned layers (INT8 where it is faster). TensorRT 11
  removed weak typing (the INT8 flag, calibrators, layer precisions), hence explicit only.

All builds of a sweep share one timing cache (``cache_dir/tensorrt/timing-*.cache``), use a low builder
optimization level by default (fast builds; raise it for final latency numbers) and report the median
latency of one inference (``TrtRunner.last_inference_time()``, host/device copies included) over the
evaluation feeds.

Nothing here imports ``tensorrt`` at module level: importing this module works without TensorRT.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import statistics
import time
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from precision_lab._optional import require
from precision_lab.backends.base import Backend, PlanBuild, RunTimings
from precision_lab.backends.detect import TensorRTStatus, require_tensorrt
from precision_lab.backends.exports import MODES, export_commands, trtexec_layer_spec_problem
from precision_lab.backends.trt_layers import layers_for_nodes
from precision_lab.errors import EvaluationError, InputError, MissingDependencyError

if TYPE_CHECKING:
    from precision_lab.model import PreparedModel

__all__ = [
    "MODES",
    "DEFAULT_OPTIMIZATION_LEVEL",
    "TensorRTBackend",
    "TensorRTOptions",
    "export_commands",
    "trtexec_layer_spec_problem",
    "implicit_mode_error",
]

DEFAULT_OPTIMIZATION_LEVEL = 1  # TensorRT's own default is 3; sweeps build many engines
Shape = Sequence[int]


def implicit_mode_error(version: str) -> InputError:
    """The error for ``mode="implicit"`` on TensorRT >= 11."""
    return InputError(
        f"TensorRT {version} cannot run the implicit mode: TensorRT 11 removed weak typing (the INT8 builder "
        "flag, INT8 calibrators and per-layer precisions); use the explicit mode (--trt-mode explicit), which "
        "builds the plan's Q/DQ model as a strongly typed network"
    )


def _major(version: str | None) -> int:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else 0


def _check_profiles(
    profiles: Mapping[str, tuple[Shape, Shape, Shape]] | None,
) -> dict[str, tuple[tuple[int, ...], ...]]:
    checked: dict[str, tuple[tuple[int, ...], ...]] = {}
    for name, shapes in (profiles or {}).items():
        try:
            low, opt, high = (tuple(int(d) for d in shape) for shape in shapes)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"TensorRT profile for input '{name}' must be three shapes (min, opt, max), got {shapes!r}"
            ) from exc
        if not len(low) == len(opt) == len(high):
            raise InputError(f"TensorRT profile for input '{name}': min, opt and max shapes differ in rank")
        if not all(0 < a <= b <= c for a, b, c in zip(low, opt, high)):
            raise InputError(
                f"TensorRT profile for input '{name}' needs 0 < min <= opt <= max in every dimension, "
                f"got min={list(low)} opt={list(opt)} max={list(high)}"
            )
        checked[str(name)] = (low, opt, high)
    return checked


def _first_line(text: str, limit: int = 400) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


@contextlib.contextmanager
def _captured_errors(quiet: bool = False):
    """Collect the error messages Polygraphy logs (TensorRT's logger reports errors through it) meanwhile;
    ``quiet`` also hides Polygraphy's and TensorRT's info and warning lines for the duration."""
    from polygraphy.logger import G_LOGGER

    messages: list[str] = []
    missing = object()
    patched_before = vars(G_LOGGER).get("error", missing)
    original = G_LOGGER.error

    def error(message, *args, **kwargs):
        with contextlib.suppress(Exception):
            messages.append(_first_line(message() if callable(message) else message))
        return original(message, *args, **kwargs)

    G_LOGGER.error = error
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR) if quiet else contextlib.nullcontext():
            yield messages
    finally:
        if patched_before is missing:
            with contextlib.suppress(AttributeError):
                del G_LOGGER.error
        else:
            G_LOGGER.error = patched_before


def _failure(what: str, exc: BaseException, messages: Sequence[str]) -> EvaluationError:
    detail = "; ".join(dict.fromkeys(m for m in messages if m)) or _first_line(str(exc)) or type(exc).__name__
    return EvaluationError(f"{what}: {detail[:600]}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "device"


class _CallerError(Exception):
    """Carries an exception of the ``on_output`` callback past the handler of TensorRT's own failures."""


@dataclass(frozen=True)
class TensorRTOptions:
    """The TensorRT backend's options (see :class:`TensorRTBackend`; defaults are its defaults)."""

    mode: str = "explicit"
    builder_optimization_level: int | None = DEFAULT_OPTIMIZATION_LEVEL
    workspace_mib: int | None = None
    profiles: Mapping[str, tuple[Shape, Shape, Shape]] | None = None

    @staticmethod
    def add_arguments(group) -> None:
        """The command-line options (an argparse group)."""
        group.add_argument(
            "--trt-mode", default="explicit", choices=list(MODES),
            help="TensorRT: explicit Q/DQ, strongly typed (default; the only mode of TensorRT 11) or implicit "
            "(TensorRT 10)",
        )
        group.add_argument(
            "--builder-optimization-level", type=int, default=DEFAULT_OPTIMIZATION_LEVEL,
            help="TensorRT builder level 0-5 (default 1 during sweeps)",
        )
        group.add_argument("--workspace", type=int, metavar="MIB", help="TensorRT workspace limit in MiB")
        group.add_argument(
            "--trt-profile", action="append", default=[], metavar="NAME:MIN,OPT,MAX",
            help="TensorRT optimization profile of a dynamic input, e.g. images:1x3x320x320,1x3x640x640,1x3x640x640",
        )

    @classmethod
    def from_args(cls, args) -> TensorRTOptions:
        """The options from parsed command-line arguments."""
        return cls(
            mode=args.trt_mode,
            builder_optimization_level=args.builder_optimization_level,
            workspace_mib=args.workspace,
            profiles=_parse_profiles(args.trt_profile) or None,
        )


def _parse_profiles(items: Sequence[str]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``NAME:MIN,OPT,MAX`` items (shapes like ``1x3x224x224``) as profiles."""
    profiles = {}
    for item in items:
        name, _, shapes = item.rpartition(":")
        try:
            parsed = tuple(tuple(int(d) for d in shape.lower().split("x")) for shape in shapes.split(","))
        except ValueError:
            parsed = ()
        if not name or len(parsed) != 3:
            raise InputError(f"bad --trt-profile '{item}'; write NAME:MIN,OPT,MAX with shapes like 1x3x224x224")
        profiles[name] = parsed
    return profiles


class TensorRTBackend(Backend):
    """TensorRT through Polygraphy (``mode`` ``"explicit"``, the default, or ``"implicit"`` on TensorRT 10).

    Options: ``builder_optimization_level`` (default 1: quick builds during sweeps; TensorRT's default is 3),
    ``workspace_mib`` (workspace memory pool limit, default TensorRT's: the device memory), ``profiles``
    (``{input name: (min, opt, max) shapes}`` for dynamic inputs; default: the prepared model's fixed shapes),
    ``timing_cache`` (share one timing cache file across the sweep's builds, default on) and ``warmup`` (untimed
    inferences before the timed ones, default 1), ``verbose`` (show Polygraphy's and TensorRT's info and
    warning lines; default off: only errors, which also go into the :class:`EvaluationError`).
    """

    name = "tensorrt"
    needs_gpu_per_worker = True

    @classmethod
    def from_options(cls, options: TensorRTOptions | Mapping[str, object] | None = None) -> TensorRTBackend:
        """The backend for ``options`` (a :class:`TensorRTOptions`, or its fields as a mapping; default
        :class:`TensorRTOptions`); checks that TensorRT can run here."""
        if isinstance(options, Mapping):
            options = TensorRTOptions(**options)
        options = options or TensorRTOptions()
        backend = cls(
            mode=options.mode,
            builder_optimization_level=options.builder_optimization_level,
            workspace_mib=options.workspace_mib,
            profiles=options.profiles,
        )
        backend.check()  # one line if TensorRT is unusable (what is missing, how to install), too old, or the
        # implicit mode is asked of TensorRT 11: before any work is done
        return backend

    def __init__(
        self,
        *,
        mode: str = "explicit",
        builder_optimization_level: int | None = DEFAULT_OPTIMIZATION_LEVEL,
        workspace_mib: int | None = None,
        profiles: Mapping[str, tuple[Shape, Shape, Shape]] | None = None,
        timing_cache: bool = True,
        warmup: int = 1,
        verbose: bool = False,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"unknown TensorRT mode '{mode}'; choose one of {', '.join(MODES)}")
        if builder_optimization_level is not None and not 0 <= int(builder_optimization_level) <= 5:
            raise InputError(f"builder optimization level must be 0..5, got {builder_optimization_level}")
        if workspace_mib is not None and int(workspace_mib) <= 0:
            raise InputError(f"TensorRT workspace must be a positive number of MiB, got {workspace_mib}")
        self.mode = mode
        level = builder_optimization_level
        self.builder_optimization_level = None if level is None else int(level)
        self.workspace_mib = None if workspace_mib is None else int(workspace_mib)
        self.profiles = _check_profiles(profiles)
        self.timing_cache = timing_cache
        self.warmup = max(0, int(warmup))
        self.verbose = verbose
        self._status: TensorRTStatus | None = None
        self._cache_dir: Path | None = None
        self._model_bytes: bytes | None = None
        self._node_names: tuple[str, ...] = ()
        self._calib_feeds: list[dict[str, np.ndarray]] = []
        self._calibration_cache: Path | None = None

    # --- setup -------------------------------------------------------------------------------------------

    def check(self) -> TensorRTStatus:
        """Raise now if this backend cannot run here: TensorRT unusable (:class:`MissingDependencyError`),
        older than 10, or the implicit mode on TensorRT 11 (:class:`InputError`). Cached after success."""
        if self._status is None:
            status = require_tensorrt()
            if _major(status.version) < 10:
                raise MissingDependencyError(
                    f"precision-lab needs TensorRT >= 10, found {status.version}; "
                    "upgrade it with: pip install -U 'precision-lab[tensorrt]'"
                )
            if self.mode == "implicit" and _major(status.version) >= 11:
                raise implicit_mode_error(status.version or "11")
            self._status = status
        return self._status

    @property
    def version(self) -> str:
        return self.check().version or "?"

    def identity(self) -> str:
        status = self.check()
        profiles = ";".join(f"{n}={[list(s) for s in shapes]}" for n, shapes in sorted(self.profiles.items()))
        return (
            f"tensorrt-{status.version}:{status.device}:mode={self.mode}:opt={self.builder_optimization_level}"
            f":workspace={self.workspace_mib}:profiles={profiles}"
        )

    def setup(
        self, *, prepared: PreparedModel, calib_feeds: Sequence[dict[str, np.ndarray]], cache_dir: Path
    ) -> None:
        """Check TensorRT; keep the prepared model, calibration feeds and cache paths the builds need."""
        status = self.check()
        self._cache_dir = Path(cache_dir) / "tensorrt"
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._node_names = tuple(node.name for node in prepared.model.graph.node)
        if self.mode == "implicit":
            if not calib_feeds:
                raise InputError("the TensorRT implicit mode needs calibration feeds; none were given")
            self._model_bytes = prepared.serialized()
            self._calib_feeds = [
                {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in feed.items()}
                for feed in calib_feeds
            ]
            from precision_lab.data import feeds_fingerprint

            key = hashlib.sha256(
                f"{prepared.prepared_sha256}:{status.version}:{feeds_fingerprint(self._calib_feeds)}".encode()
            ).hexdigest()[:20]
            self._calibration_cache = self._cache_dir / f"calibration-{key}.cache"

    @property
    def timing_cache_path(self) -> Path | None:
        """The timing cache shared by this sweep's builds (per TensorRT version and GPU)."""
        if not self.timing_cache or self._cache_dir is None:
            return None
        status = self.check()
        return self._cache_dir / f"timing-trt{status.version}-{_slug(status.device or 'gpu')}.cache"

    @property
    def calibration_cache_path(self) -> Path | None:
        """The implicit mode's calibration cache (written by the first build, read by the others)."""
        return self._calibration_cache

    # --- building ----------------------------------------------------------------------------------------

    def _profiles(self):
        if not self.profiles:
            return None
        from polygraphy.backend.trt import Profile

        profile = Profile()
        for name, (low, opt, high) in self.profiles.items():
            profile.add(name, min=low, opt=opt, max=high)
        return [profile]

    def _config(self, trt, *, calibrator=None):
        from polygraphy.backend.trt import CreateConfig

        options: dict[str, Any] = {
            "builder_optimization_level": self.builder_optimization_level,
            "profiles": self._profiles(),
        }
        if self.workspace_mib is not None:
            options["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: self.workspace_mib << 20}
        timing = self.timing_cache_path
        if timing is not None and timing.exists():
            options["load_timing_cache"] = str(timing)
        if self.mode == "implicit":
            options.update(int8=True, calibrator=calibrator, precision_constraints="obey")
        return CreateConfig(**options)

    def _strongly_typed_flag(self, trt) -> bool:
        # TensorRT 11 networks are always strongly typed; its STRONGLY_TYPED flag is accepted but ignored, and
        # Polygraphy fails if a build lacks it, so only ask for it where it exists.
        return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") or _major(self.version) < 11

    def _implicit_network(self, trt, fp32_layers: Sequence[str]):
        """``(builder, network, parser)`` of the prepared model with the pinned nodes' layers set to FP32."""
        from polygraphy.backend.trt import NetworkFromOnnxBytes

        if self._model_bytes is None:
            raise EvaluationError("TensorRTBackend.run() called before setup()")
        builder, network, parser = NetworkFromOnnxBytes(self._model_bytes)()
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        pinned = layers_for_nodes(layers, fp32_layers, self._node_names)
        floats = {trt.float32, trt.float16}
        skip = {trt.LayerType.CONSTANT, trt.LayerType.SHAPE}
        for node_layers in pinned.values():
            for layer in node_layers:
                if layer.type in skip:
                    continue
                outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in floats]
                if not outputs:
                    continue  # shape arithmetic of the node: integer, nothing to pin
                layer.precision = trt.float32
                for index in outputs:
                    layer.set_output_type(index, trt.float32)
        return builder, network, parser

    def describe(self) -> str:
        status = self.check()
        return f"TensorRT {status.version} on {status.device}, {self.mode} mode, builder level {self.builder_optimization_level}"

    def info(self) -> dict:
        return super().info() | {"mode": self.mode}

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    def with_cache_dir(self, path: Path) -> TensorRTBackend:
        import copy

        moved = copy.copy(self)
        moved._cache_dir = Path(path)
        if self._calibration_cache is not None:
            moved._calibration_cache = Path(path) / self._calibration_cache.name
        return moved

    def pinned_layers(self, plan) -> dict[str, list[str]]:
        if self.mode != "implicit":
            return super().pinned_layers(plan)
        return self.pinned_layer_names(sorted(plan.fp32_layers))

    def build_commands(self, plan_onnx: Path, *, out: Path, prepared: PreparedModel, plan) -> dict[str, str]:
        """The explicit build of ``plan_onnx``; in the implicit mode also the commands that pin the plan's
        layers on the FP32 model (written to ``OUT/prepared.onnx``) with the sweep's calibration cache."""
        commands = super().build_commands(plan_onnx, out=out, prepared=prepared, plan=plan)
        if self.mode != "implicit":
            return commands
        from precision_lab.onnx_io import save_model

        save_model(prepared.model, out / "prepared.onnx")
        layers = [name for names in self.pinned_layers(plan).values() for name in names]
        implicit = export_commands(
            plan_onnx,
            mode="implicit",
            fp32_layers=layers,
            model_onnx=out / "prepared.onnx",
            calibration_cache=self.calibration_cache_path,
        )
        return commands | {f"implicit_{key}": value for key, value in implicit.items()}

    def pinned_layer_names(self, fp32_layers: Sequence[str]) -> dict[str, list[str]]:
        """TensorRT layer names of each pinned ONNX node (implicit mode, after :meth:`setup`): what
        ``trtexec --layerPrecisions`` / ``polygraphy --layer-precisions`` need."""
        trt = require("tensorrt", "tensorrt")
        self.check()
        from polygraphy.backend.trt import NetworkFromOnnxBytes

        if self._model_bytes is None:
            raise InputError("pinned_layer_names() needs setup() in the implicit mode first")
        _, network, _ = NetworkFromOnnxBytes(self._model_bytes)()
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        skip = {trt.LayerType.CONSTANT, trt.LayerType.SHAPE}
        mapping = layers_for_nodes(layers, fp32_layers, self._node_names)
        return {node: [layer.name for layer in found if layer.type not in skip] for node, found in mapping.items()}

    def build_engine(self, plan: PlanBuild):
        """The deserialized engine of ``plan``; :class:`EvaluationError` with TensorRT's message if it fails."""
        trt = require("tensorrt", "tensorrt")
        self.check()
        from polygraphy.backend.trt import Calibrator, EngineFromNetwork, NetworkFromOnnxBytes

        timing = self.timing_cache_path
        with _captured_errors(quiet=not self.verbose) as messages:
            try:
                if self.mode == "explicit":
                    network = NetworkFromOnnxBytes(plan.qdq_model, strongly_typed=self._strongly_typed_flag(trt))
                    config = self._config(trt)
                else:
                    network = self._implicit_network(trt, plan.fp32_layers)
                    calibrator = Calibrator(self._calib_feeds, cache=str(self._calibration_cache))
                    config = self._config(trt, calibrator=calibrator)
                loader = EngineFromNetwork(network, config=config, save_timing_cache=str(timing) if timing else None)
                engine = loader()
            except InputError:
                raise  # an unmatched pinned node: a usage problem, not a failed evaluation
            except Exception as exc:
                raise _failure("TensorRT could not build the engine", exc, messages) from exc
        if engine is None:
            raise EvaluationError("TensorRT could not build the engine: the builder returned no engine")
        return engine

    # --- running -----------------------------------------------------------------------------------------

    def run(
        self,
        plan: PlanBuild,
        feeds: Sequence[dict[str, np.ndarray]],
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        """Build ``plan`` and run it on ``feeds``: outputs per feed (or each passed to ``on_output(index,
        outputs)`` and not kept), build/inference seconds, median latency."""
        from polygraphy.backend.trt import TrtRunner

        start = time.perf_counter()
        engine = self.build_engine(plan)
        outputs: list[dict[str, np.ndarray]] = []
        latencies: list[float] = []
        with _captured_errors(quiet=not self.verbose) as messages:
            try:
                with TrtRunner(engine, name="tensorrt") as runner:
                    built = time.perf_counter()
                    for feed in list(feeds[:1]) * self.warmup:
                        runner.infer(feed)
                    for index, feed in enumerate(feeds):
                        result = {name: np.array(value) for name, value in runner.infer(feed).items()}  # copies
                        try:
                            if on_output is None:
                                outputs.append(result)
                            else:
                                on_output(index, result)
                        except Exception as exc:  # the caller's comparison failed, not TensorRT
                            raise _CallerError() from exc
                        seconds = runner.last_inference_time()
                        if seconds is not None:
                            latencies.append(seconds)
            except _CallerError as wrapper:
                raise wrapper.__cause__ from None
            except Exception as exc:
                raise _failure("TensorRT inference failed", exc, messages) from exc
            finally:
                del engine
        done = time.perf_counter()
        latency_ms = statistics.median(latencies) * 1000.0 if latencies else None
        return outputs, RunTimings(build=built - start, infer=done - built, latency_ms=latency_ms)


# --- export commands ---------------------------------------------------------------------------------------
