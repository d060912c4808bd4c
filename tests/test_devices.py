"""Devices and data-parallel training: --device plumbing on the CPU, a real 2-process Gloo run
(torchrun) against a single process with the same global batch, resume after it, bad launches;
device mixing caught on the CPU (the virtual device: every trainer, thinking, evaluation and the
probes), a float64 run that makes no float32 tensor, and the whole `check-device --device cpu`."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iclebm.cli import main
from iclebm.devices import DeviceError, check_amp, resolve_device
from iclebm.dynamics.langevin import langevin
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.training.config import TrainConfig, task_seed
from iclebm.training.distributed import (
    DistInfo,
    DistributedError,
    check_batch_split,
    init_from_env,
    read_env,
)
from iclebm.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
TINY = ["--preset", "small", "--threads", "1", "--quiet", "--save-every", "1e9"]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_resolve_device_on_this_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    expect = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expect and resolve_device(None).type == expect
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if sys.platform != "darwin":
        with pytest.raises(DeviceError, match="macOS"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve_device("cuda")
        with pytest.raises(DeviceError, match="CUDA"):
            check_amp(True, torch.device("cpu"))


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_cli_rejects_missing_device_with_one_line(device, capsys, tmp_path):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and sys.platform == "darwin":
        pytest.skip("this machine is a Mac")
    out = tmp_path / "m.safetensors"
    rc = main(["train", *TINY, "--steps", "1", "--device", device, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and device in err
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written
    assert main(["evaluate", "--device", device, "--tasks", "1"]) == 2


def test_model_follows_its_device_for_cpu_inputs():
    model = EnergyTransformer(EnergyConfig(n_layer=1, n_head=2, d_model=8)).eval()
    ctx = torch.randn(2, 5, 2, dtype=torch.float64)  # float64 input is cast to the model's dtype
    q = torch.randn(2, 7, 2)
    e = model.energy(q, ctx)
    assert e.device == model.device and e.dtype == torch.float32
    out = langevin(model, ctx, q, 3, 0.05, 0.1, generator=torch.Generator().manual_seed(0))
    assert out.device == model.device and out.shape == q.shape


def test_cli_device_cpu_and_auto_train_the_same(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["train", *TINY, "--steps", "2", "--device", "cpu", "--out", str(a)]) == 0
    assert main(["train", *TINY, "--steps", "2", "--device", "auto", "--out", str(b)]) == 0
    card = json.loads(a.with_suffix(".json").read_text())["training"]
    assert card["world_size"] == 1 and card["device"].startswith("cpu") and card["steps"] == 2
    if not torch.cuda.is_available():  # auto is the CPU here: the same run
        wa, wb = load_file(str(a)), load_file(str(b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_task_seeds_make_the_batch_split_invariant():
    cfg = TrainConfig(batch_size=4, context_len=6, extra_points=2, chains=2, langevin_steps=2)
    whole = Trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8))
    seq, init = whole.sample_batch()
    with pytest.raises(DistributedError, match="process group"):
        Trainer(config=cfg, dist=DistInfo(rank=0, world_size=2, local_world_size=2))
    for rank in range(2):
        part = Trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8))
        part.local_batch, part.task_lo = 2, 2 * rank  # what rank `rank` of 2 draws
        s, i = part.sample_batch()
        assert torch.equal(s, seq[2 * rank : 2 * rank + 2]) and torch.equal(i, init[2 * rank : 2 * rank + 2])
    assert len({task_seed(0, 0, i) for i in range(64)} | {task_seed(0, 1, i) for i in range(64)}) == 128


def test_bad_world_size_and_unreachable_rendezvous(monkeypatch):
    with pytest.raises(DistributedError, match="bad world size"):
        check_batch_split(16, 3)
    with pytest.raises(DistributedError, match="bad world size"):
        check_batch_split(2, 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        read_env()
    env = {"RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DistributedError, match="cannot join the process group") as e:
        init_from_env("cpu", timeout_s=2.0)  # nobody listens on that port
    assert "\n" not in str(e.value)
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DistributedError, match="outside the world"):
        read_env()


def test_cli_bad_world_size_is_one_line_and_writes_nothing(tmp_path):
    env = clean_env() | {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                         "MASTER_PORT": str(free_port())}
    out = tmp_path / "m.safetensors"
    r = subprocess.run([sys.executable, "-m", "iclebm", "train", *TINY, "--steps", "1", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "bad world size" in r.stderr
    assert not list(tmp_path.iterdir())


def torchrun(tmp_path: Path, out: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "iclebm", "train", *TINY,
           "--steps", str(steps), "--device", "cpu", "--out", str(out), *extra]
    return subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_two_process_gloo_matches_one_process_and_resumes(tmp_path):
    """torchrun, 2 CPU ranks x 8 tasks == one process x 16 tasks, to float32 rounding; then resume."""
    single, ddp = tmp_path / "single.safetensors", tmp_path / "ddp.safetensors"
    assert main(["train", *TINY, "--steps", "3", "--out", str(single)]) == 0
    r = torchrun(tmp_path, ddp, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads(ddp.with_suffix(".json").read_text())["training"]
    assert card["world_size"] == 2 and card["steps"] == 2
    assert card["command"].startswith("torchrun --nnodes=1 --nproc_per_node=2 -m iclebm train")
    r = torchrun(tmp_path, ddp, 3, "--resume")  # resume the DDP run with DDP
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads(ddp.with_suffix(".json").read_text())["training"]
    assert card["steps"] == 3 and len(card["commands"]) == 2
    ws, wd = load_file(str(single)), load_file(str(ddp))
    for k in ws:
        assert torch.allclose(ws[k], wd[k], rtol=1e-4, atol=1e-5), (k, (ws[k] - wd[k]).abs().max())


@requires_cuda
def test_cuda_training_step_matches_cpu():
    cfg = TrainConfig(batch_size=4, context_len=6, extra_points=2, chains=2, langevin_steps=2)
    mc = EnergyConfig(n_layer=1, n_head=2, d_model=8)
    cpu, gpu = Trainer(config=cfg, model_config=mc), Trainer(config=cfg, model_config=mc, device="cuda")
    cpu.step()
    gpu.step()
    for (k, a), b in zip(cpu.model.state_dict().items(), gpu.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b.cpu(), atol=1e-4), k


def test_bench_throughput_table_names_the_devices(capsys):
    assert main(["bench", "--quick", "--throughput-only", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| device | train step | steps/s | context tokens/s | app heatmap |" in out
    assert "| cpu (" in out
    if not torch.cuda.is_available():
        assert "| cuda | not available on this machine" in out


# ---- device mixing on the CPU: the virtual device ------------------------------------------------

def test_virtual_device_refuses_what_cuda_refuses():
    from iclebm.diagnostics.virtual_device import DeviceMixError, virtual_device

    with virtual_device() as dev:
        a = torch.arange(6.0).reshape(2, 3).to(dev)
        b = torch.ones(2, 3, device=dev)
        assert a.device == dev and b.device == dev
        assert torch.equal((a + b).cpu(), torch.arange(6.0).reshape(2, 3) + 1)
        assert float((a * torch.tensor(2.0)).sum().item()) == 30.0  # a 0-dim CPU scalar may join, as on CUDA
        with pytest.raises(DeviceMixError, match="aten.add"):
            a + torch.ones(3)
        with pytest.raises(DeviceMixError, match="aten.stack"):
            torch.stack([a, torch.zeros(2, 3)])
        with pytest.raises(DeviceMixError, match="generator"):
            torch.randn(3, generator=torch.Generator().manual_seed(0), device=dev)
        x = torch.randn(2, 4, device=dev).requires_grad_(True)  # autograd works on it
        (g,) = torch.autograd.grad((x * x).sum(), x)
        assert g.device == dev and torch.allclose(g.cpu(), 2 * x.detach().cpu())


TINY_MODEL = {"n_layer": 1, "d_model": 16}


@pytest.mark.parametrize(("preset", "objective"), [
    ("small", "cd"), ("small", "exact"), ("linreg", "exact"), ("sinusoid", "cd"), ("mdn2d", None),
])
def test_training_steps_keep_to_the_model_device(preset, objective):
    """One update of every trainer and objective with the model on the virtual device: a tensor made
    on the CPU that meets the model's (regression's y grid once) fails here as it fails on CUDA."""
    from dataclasses import replace

    from iclebm.diagnostics.virtual_device import virtual_device
    from iclebm.training.presets import get_preset
    from iclebm.training.trainer import MixtureTrainer, make_trainer

    p = get_preset(preset)
    cfg = replace(p.train, batch_size=2, context_len=5, extra_points=2, chains=2, langevin_steps=2,
                  y_grid=8, grid_resolution=4, **({"objective": objective} if objective else {}))
    mc = replace(p.model, **TINY_MODEL)
    with virtual_device() as dev:
        if objective is None:
            trainer = MixtureTrainer(config=cfg, model_config=mc, device=dev)
        else:
            trainer = make_trainer(config=cfg, model_config=mc, device=dev)
        m = trainer.step()
        assert not m["skipped"] and math.isfinite(m["loss"])
        assert all(q.device == dev for q in trainer.model.parameters())


VIRTUAL_PATHS = {  # the check's paths beyond training, on the virtual device (the cheap ones; the CPU
    # check below runs them all for real)
    "small": ("calibrate", "langevin", "landscape + film strip", "inspect", "ctx2weights"),
    "linreg": ("evaluate", "thinking", "regression view"),
    "mdn2d": ("langevin", "landscape + film strip"),
}


@pytest.mark.parametrize("preset", sorted(VIRTUAL_PATHS))
def test_probes_thinking_and_evaluation_keep_to_the_model_device(preset):
    """Before the fix: the landscape's grid, ctx2weights' points, thinking's starts and the regression
    evaluation's predictions were made on the CPU (and .numpy() called on device tensors)."""
    from iclebm.diagnostics.check import _make_case, _plan
    from iclebm.diagnostics.virtual_device import virtual_device

    with virtual_device() as dev:
        case = _make_case(preset, dev, amp=False, small=True)
        paths = dict(_plan(case))
        assert set(VIRTUAL_PATHS[preset]) <= set(paths)
        for name in VIRTUAL_PATHS[preset]:
            paths[name]()  # raises DeviceMixError on a tensor made off the model's device


def test_a_float64_model_computes_in_float64():
    """Model and inputs in float64: every path returns float64 and makes no float32 tensor on the way
    (a constructor without the model's dtype rounds the points or the grid to float32)."""
    from lib_helpers import random_model
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from iclebm.dynamics.thinking import predict
    from iclebm.models.regression import conditional_nll
    from iclebm.probes.inspector import inspect_query
    from iclebm.probes.landscape import compute_film_strip, compute_landscape
    from iclebm.probes.regression_view import compute_regression_view

    class Float32Watch(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen += [str(func) for o in tree_flatten(out)[0]
                          if isinstance(o, torch.Tensor) and o.dtype == torch.float32]
            return out

    model = random_model(dtype=torch.float64)
    model.card = {"box": [-5.0, 5.0]}
    g = torch.Generator().manual_seed(0)
    ctx, q = torch.randn(2, 5, 2, dtype=torch.float64, generator=g), torch.randn(2, 7, 2, dtype=torch.float64)
    pts, box = ctx[0].numpy(), (-5.0, 5.0)
    paths = {
        "energy": lambda: model.energy(q, ctx),
        "langevin": lambda: langevin(model, ctx, q, 3, 0.05, 0.1, generator=g),
        "thinking": lambda: predict(model, q[..., 0], ctx, steps=2, starts=3),
        "conditional nll": lambda: conditional_nll(model, ctx, q, [0, 2, 5], box, 8),
        # the probes return display arrays (float32 by design): only the computation is watched
        "landscape": lambda: compute_landscape(model, pts, box, 6, 3),
        "film strip": lambda: compute_film_strip(model, pts, box, 6),
        "inspect": lambda: inspect_query(model, pts, pts[0]),
        "regression view": lambda: compute_regression_view(model, pts, box, 6, 2),
    }
    for name, fn in paths.items():
        watch = Float32Watch()
        with watch:
            out = fn()
        assert not watch.seen, f"{name} made float32 tensors: {sorted(set(watch.seen))}"
        assert not isinstance(out, torch.Tensor) or out.dtype == torch.float64, (name, out.dtype)


def test_check_device_cpu_passes_every_path_of_every_preset(capsys):
    """The whole device check, as CI runs it: every preset, every path, small sizes on the CPU."""
    from iclebm.training.presets import PRESETS

    rc = main(["check-device", "--device", "cpu", "--quiet", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| path | result | seconds |" in out and "FAIL" not in out
    for preset in PRESETS:
        assert f"| {preset}: train " in out
    for path in ("evaluate", "calibrate", "langevin", "thinking", "landscape + film strip", "regression view",
                 "inspect", "ctx2weights", "compare --quick", "bench throughput"):
        assert f": {path} | pass |" in out, path


def test_check_device_refuses_a_missing_gpu_in_one_line(capsys):
    assert main(["check-device", "--device", "cpu", "--amp"]) == 2  # bf16 autocast is CUDA only
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "CUDA" in err
    if torch.cuda.is_available():
        return
    assert main(["check-device", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no CUDA" in err
    assert main(["check-device", "--presets", "nope"]) == 2
