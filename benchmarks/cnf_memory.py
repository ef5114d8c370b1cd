"""Memory of a CNF's gradient: backpropagation through the solver against the adjoint method.

One training step (forward, Gaussian negative log-likelihood, backward) of a 2-D
``CNF(TimeMLP(2, 64))`` with the exact trace, in each configuration:

  * backpropagation through RK4 with 10 and with 40 steps, and through dopri5;
  * the adjoint method with dopri5, at the same tolerances.

Two figures per configuration, each measured for what it is:

  * **held for backward**: the memory allocated when the forward pass returns, above what was
    allocated before it: the autograd graph and the tensors it saved for the backward pass (plus
    ``z`` and ``log_det``, a few KiB). This is what grows with the number of solver steps under
    backpropagation and what the adjoint method removes. On a GPU it is
    ``torch.cuda.memory_allocated``; on a CPU, the bytes glibc's ``malloc`` has handed out and not
    taken back (``mallinfo2``: ``uordblks + hblkhd``), which is where torch's CPU tensors live.
    (``torch.autograd.graph.saved_tensors_hooks`` would count saved tensors directly, but
    ``torch.func.vjp``, which computes the trace, refuses those hooks.)
  * **peak**: on a GPU, ``torch.cuda.max_memory_allocated`` during the step, above what was
    allocated before it. On a CPU, the growth of the process's peak resident set size
    (``resource.getrusage(...).ru_maxrss``) over the step, each configuration in a fresh Python
    process so that one's peak cannot hide another's. RSS also counts the allocator's caches and
    the temporaries of the backward pass, so it is coarser than the first figure; it is what the
    operating system really had to provide.

Also printed: the evaluations of the vector field in the forward and in the backward pass (the
adjoint trades memory for a backward ODE solve), and how far the adjoint's gradient is from the
one backpropagated through dopri5.

Usage:  python benchmarks/cnf_memory.py [--batch 512] [--tolerance 1e-5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import subprocess
import sys

import torch
from torch import nn

from course_pkg.flows import CNF
from course_pkg.nets import TimeMLP

CONFIGURATIONS = {
    "backprop rk4, 10 steps": {"method": "rk4", "steps": 10},
    "backprop rk4, 40 steps": {"method": "rk4", "steps": 40},
    "backprop dopri5": {"method": "dopri5"},
    "adjoint dopri5": {"method": "dopri5", "adjoint": True},
}


def make_flow(options: dict, tolerance: float, device: torch.device) -> CNF:
    """The same random field in every configuration (seed 0), so that dopri5 takes the same steps."""
    torch.manual_seed(0)
    field = TimeMLP(2, hidden_features=64)
    for parameter in field.parameters():
        nn.init.normal_(parameter, std=0.3)
    return CNF(field.to(device), rtol=tolerance, atol=tolerance, **options)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def allocated_bytes(device: torch.device) -> int:
    """Bytes allocated now: by the CUDA caching allocator, or by glibc's malloc (small blocks + mmapped ones)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def training_step(flow: CNF, x: torch.Tensor) -> dict:
    """Forward and backward once; the bytes held for backward, the NFE of both passes, the gradient."""
    before = allocated_bytes(x.device)
    z, log_det = flow(x)
    held_bytes = allocated_bytes(x.device) - before
    forward_nfe = flow.nfe
    loss = (0.5 * z.pow(2).sum(dim=1) - log_det).mean()
    loss.backward()
    gradient = torch.cat([parameter.grad.flatten() for parameter in flow.field.parameters()])
    return {
        "held_bytes": held_bytes,
        "forward_nfe": forward_nfe,
        "backward_nfe": flow.nfe - forward_nfe,
        "gradient": gradient.tolist(),
    }


def measure(name: str, batch: int, tolerance: float, device: torch.device) -> dict:
    """One configuration: a small warm-up step (kernels, libraries), then the measured step."""
    x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1)).to(device)
    training_step(make_flow(CONFIGURATIONS[name], tolerance, device), x[:8])
    flow = make_flow(CONFIGURATIONS[name], tolerance, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = training_step(flow, x)
        torch.cuda.synchronize()
        result["peak_bytes"] = torch.cuda.max_memory_allocated() - before
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = training_step(flow, x)
        result["peak_bytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", choices=list(CONFIGURATIONS), help="measure one configuration, print JSON")
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(measure(arguments.one, arguments.batch, arguments.tolerance, torch.device(arguments.device))))
        return
    common = ["--batch", str(arguments.batch), "--tolerance", str(arguments.tolerance), "--device", arguments.device]
    results = {}
    for name in CONFIGURATIONS:  # a fresh process each: a peak resident set size only ever grows
        run = subprocess.run([sys.executable, __file__, "--one", name, *common], capture_output=True, text=True, check=True)
        results[name] = json.loads(run.stdout.splitlines()[-1])
    peak = "peak allocated (CUDA)" if arguments.device.startswith("cuda") else "peak RSS growth"
    print(f"CNF(TimeMLP(2, 64)), exact trace, batch {arguments.batch}, dopri5 tolerance {arguments.tolerance:g}, "
          f"device {arguments.device}, torch {torch.__version__}")
    print(f"{'configuration':<24} {'held for backward':>19} {peak:>22} {'NFE forward':>12} {'NFE backward':>13}")
    for name, result in results.items():
        print(f"{name:<24} {result['held_bytes'] / 2**20:>15.2f} MiB {result['peak_bytes'] / 2**20:>18.2f} MiB "
              f"{result['forward_nfe']:>12} {result['backward_nfe']:>13}")
    backprop = torch.tensor(results["backprop dopri5"]["gradient"])
    adjoint = torch.tensor(results["adjoint dopri5"]["gradient"])
    print(f"adjoint against backprop through dopri5: largest gradient difference "
          f"{(adjoint - backprop).abs().max().item():.2e} (largest gradient {backprop.abs().max().item():.2e})")


if __name__ == "__main__":
    main()
