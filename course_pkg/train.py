"""One training loop for the density models of the course: maximum likelihood with Adam.

The loss is the mean negative log-likelihood of a batch, ``-1/B sum_b log p(x_b)`` in nats; the
progress bar also shows it in bits per dimension, ``loss / (D log 2)``, where ``D`` counts the
numbers in one sample. For 8-bit images, train a
:class:`~course_pkg.preprocessing.DequantizedModel` on the integer pixels: its ``log_prob``
includes the dequantization correction, so that figure is the papers' bits per dimension.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm.std import tqdm

from course_pkg.devices import default_device

if TYPE_CHECKING:
    from IPython.display import DisplayHandle

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
"""tqdm's bar without its rate, so that it fits the width of a book page:
``training: 100%|##########| 250/250 [01:18<00:00, loss=1851, bpd=3.405]``."""


def train(
    model: nn.Module,
    data: Tensor | Iterable[Tensor],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    progress: bool = True,
    max_grad_norm: float = 10.0,
) -> list[float]:
    """Fit ``model`` (anything with ``log_prob(x) -> [batch]``) to ``data`` by ``steps`` Adam steps; returns the losses.

    ``data`` is a tensor ``[N, ...]``, from which each step draws ``batch_size`` rows at random
    (with replacement), or an iterable of batches (a ``DataLoader``, a generator): a batch that is
    a tuple or list counts by its first element (labels are ignored), and ``batch_size`` is unused.
    An iterable that runs out is iterated again (a ``DataLoader`` starts a new epoch); one that
    yields nothing more raises ``ValueError``.

    ``device`` defaults to :func:`~course_pkg.devices.default_device` (the GPU where there is one);
    the model is moved there (in place, as ``Module.to`` does), and each batch too. Before each
    step the gradient's global norm is clipped to ``max_grad_norm``. With ``progress``, a text
    progress bar shows the loss in nats and in bits per dimension (see :func:`progress_bar`);
    nothing else is printed. A loss that is not finite stops training with ``FloatingPointError``,
    naming the step.
    """
    if steps < 1:
        raise ValueError(f"train needs steps >= 1, got {steps}")
    device = default_device() if device is None else torch.device(device)
    model.to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = _batches(data, batch_size)
    losses: list[float] = []
    bar = progress_bar(steps, "training", enabled=progress)
    for step in bar:
        x = next(batches).to(device)
        loss = -model.log_prob(x).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}; try a smaller lr or max_grad_norm")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        bits_per_dim = losses[-1] / (math.prod(x.shape[1:]) * math.log(2))
        bar.set_postfix({"loss": f"{losses[-1]:.4g}", "bpd": f"{bits_per_dim:.3f}"}, refresh=False)
    return losses


def progress_bar(steps: int, description: str, enabled: bool = True, start: int = 0) -> tqdm:
    """tqdm's text bar over ``range(start, steps)``: on stderr, or in a Jupyter kernel as one output rewritten in place.

    ``start`` > 0 (a resumed run) shows the bar already that far along.

    In a terminal each refresh rewrites the line after a carriage return. A Jupyter kernel gets no
    widget (its JavaScript would have to come from the network) and no stream of carriage-return
    updates (a static page would show every one of them): the bar is one display output, and each
    refresh replaces its text. A live notebook shows it moving; a notebook executed for the book
    keeps only its last state, one line in the format :data:`BAR_FORMAT`.
    """
    file = _KernelLine() if enabled and _in_jupyter_kernel() else sys.stderr
    return tqdm(range(start, steps), desc=description, disable=not enabled, file=file, bar_format=BAR_FORMAT,
                initial=start, total=steps)


class _KernelLine:
    """A file for tqdm in a Jupyter kernel: each write's last line (after its carriage return) replaces one output."""

    def __init__(self) -> None:
        self._handle: DisplayHandle | None = None

    def write(self, text: str) -> int:
        line = text.rsplit("\r", 1)[-1].rstrip()
        if line:
            from IPython.display import display  # present wherever a kernel runs

            content = {"text/plain": line}
            if self._handle is None:
                self._handle = display(content, raw=True, display_id=True)
            else:
                self._handle.update(content, raw=True)
        return len(text)

    def flush(self) -> None:
        """Nothing to flush: each write is sent at once."""


def _in_jupyter_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (a notebook, or the book's execution) rather than a terminal."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython.get_ipython(), "kernel", None) is not None


def _batches(data: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    """An endless stream of batches: random rows of a tensor, or the batches of an iterable, again and again."""
    if isinstance(data, Tensor):
        if data.dim() < 2 or data.shape[0] == 0:
            raise ValueError(f"train expects a data tensor [N, ...] with N >= 1 samples, got shape {tuple(data.shape)}")
        while True:
            yield data[torch.randint(data.shape[0], (batch_size,))]
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        if empty:
            raise ValueError("train ran out of data: pass a tensor, a DataLoader, or an iterator that does not end")
