"""``executor="ray"`` (``--executor ray``) evaluates on Ray actors of a local Ray instance and gives the same
plan.json and plan.onnx as a serial run; a Ray cluster that cannot be reached is a one-line InputError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import plan_without_paths, REPO, SAMPLES, write_random_feeds

MODEL = SAMPLES / "two_planted_cnn.onnx"

try:
    import ray  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any import failure means: no usable Ray here
    pytest.skip(
        f"ray cannot be imported ({type(exc).__name__}: {exc}); install it with: pip install 'precision-lab[ray]'",
        allow_module_level=True,
    )

# Runs in a fresh interpreter: the executor starts its own local Ray instance and shuts it down, as the CLI
# does; it reports how many plans went to the Ray actors (a batch of one plan runs in the driver).
SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import precision_lab
    from precision_lab.executors import ray as executors_ray

    remote = []
    original = executors_ray.RayExecutor._result
    def counted(self, ref):
        remote.append(1)
        return original(self, ref)
    executors_ray.RayExecutor._result = counted

    model, data, out, executor, jobs = sys.argv[1:6]
    precision_lab.sweep(model, data=data, out_dir=out, jobs=int(jobs), executor=executor, progress=False)
    print(json.dumps({"remote": len(remote)}))
    """
)


def _sweep(model, data, out, executor: str, jobs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SWEEP_SCRIPT, str(model), str(data), str(out), executor, str(jobs)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ray_executor_gives_the_same_plan_as_serial(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=24)
    runs = {"serial": ("local", 1), "ray": ("ray", 2)}
    plans = {}
    for name, (executor, jobs) in runs.items():
        out = tmp_path / name
        counts = _sweep(MODEL, data, out, executor, jobs)
        if name == "ray":
            assert counts["remote"] > 0, "no plan was evaluated on a Ray actor"
        plans[name] = json.loads((out / "plan.json").read_text())
        journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
        assert len({r["key"] for r in journal}) == len(journal) == plans[name]["evaluations"]
    assert plan_without_paths(plans["ray"]) == plan_without_paths(plans["serial"])
    assert (tmp_path / "serial" / "plan.onnx").read_bytes() == (tmp_path / "ray" / "plan.onnx").read_bytes()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_unreachable_ray_address_is_a_one_line_input_error(address):
    from precision_lab.errors import InputError, MissingDependencyError
    from precision_lab.executors.ray import RayExecutor

    if address.startswith("ray://"):
        import importlib.util

        if importlib.util.find_spec("grpc") is None:  # Ray Client missing: that error comes first
            with pytest.raises(MissingDependencyError, match=r"pip install 'ray\[client\]'"):
                RayExecutor(None, jobs=2, address=address, runner=None)
            return
    with pytest.raises(InputError) as info:
        RayExecutor(None, jobs=2, address=address, runner=None)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{address}'" in message and "ray start --head" in message


def test_auto_without_a_running_cluster_is_a_one_line_input_error(monkeypatch, tmp_path):
    import ray

    from precision_lab.errors import InputError
    from precision_lab.executors.ray import RayExecutor

    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(InputError) as info:
        RayExecutor(None, jobs=2, address="auto", runner=None)
    message = str(info.value)
    assert "\n" not in message and "'auto'" in message
