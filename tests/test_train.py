"""The training loop: it lowers the NLL, takes tensors and iterables of batches, prints nothing but its bar."""

from __future__ import annotations

import math
import re

import nbformat
import pytest
import torch
from helpers import single_threaded  # noqa: F401  (a fixture, used through pytestmark)
from nbclient import NotebookClient
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from course_pkg.data import toy_data
from course_pkg.models import MultiScaleRealNVP, RealNVP
from course_pkg.preprocessing import DequantizedModel
from course_pkg.train import train

pytestmark = pytest.mark.usefixtures("single_threaded")


@pytest.fixture
def moons() -> Tensor:
    return toy_data("two_moons", 2000, seed=0)


def test_training_lowers_the_held_out_nll_on_two_moons(moons: Tensor) -> None:
    torch.manual_seed(0)
    model = RealNVP(2, num_layers=4, hidden_features=32)
    held_out = toy_data("two_moons", 1000, seed=1)
    with torch.no_grad():
        before = model.nll(held_out).item()  # a new model is N(0, I): about 3.1 nats
    losses = train(model, moons, steps=200, lr=5e-3, batch_size=128, device="cpu", progress=False)
    with torch.no_grad():
        after = model.nll(held_out).item()
    assert len(losses) == 200 and all(isinstance(loss, float) for loss in losses)
    assert after < before - 0.8, f"held-out NLL went from {before:.3f} to {after:.3f} nats only"
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.8, "the training loss should fall"


def test_iterables_of_batches_are_used_and_restarted(moons: Tensor) -> None:
    loader = DataLoader(TensorDataset(moons[:64]), batch_size=32)  # 2 batches an epoch, (x,) tuples
    model = RealNVP(2, num_layers=2, hidden_features=8)
    losses = train(model, loader, steps=5, device="cpu", progress=False)
    assert len(losses) == 5 and all(math.isfinite(loss) for loss in losses)


def test_an_iterator_that_runs_out_is_reported(moons: Tensor) -> None:
    batches = iter([moons[:32], moons[32:64]])
    with pytest.raises(ValueError, match="ran out of data"):
        train(RealNVP(2, num_layers=2, hidden_features=8), batches, steps=3, device="cpu", progress=False)


def final_bar(steps: int, bar: str = "[^|]+") -> str:
    """The pattern of the bar's last state: all steps done, elapsed time, the last loss and bits/dim, no rate."""
    return rf"training: 100%\|{bar}\| {steps}/{steps} \[\d\d:\d\d<00:00, loss=\S+, bpd=-?\d+\.\d{{3}}\]"


def visible_lines(text: str) -> list[str]:
    """What a terminal leaves on screen: each line's text after its last carriage return, blank lines dropped."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def test_nothing_is_printed_without_progress(moons: Tensor, capsys: pytest.CaptureFixture[str]) -> None:
    train(RealNVP(2, num_layers=2, hidden_features=8), moons, steps=3, device="cpu", progress=False)
    assert capsys.readouterr() == ("", "")


def test_the_bar_rewrites_one_line_on_stderr_with_the_loss_and_bits_per_dim(
    moons: Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    train(RealNVP(2, num_layers=2, hidden_features=8), moons, steps=30, device="cpu", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), "the bar ends its one line when it closes"
    [line] = visible_lines(captured.err)
    assert re.fullmatch(final_bar(30), line), line


class RecordingClient(NotebookClient):
    """Executes a notebook as the book's build does, and records the type of every message the kernel sends."""

    def __init__(self, notebook: nbformat.NotebookNode, **options: object) -> None:
        super().__init__(notebook, **options)
        self.message_types: list[str] = []

    def process_message(self, msg: dict, cell: nbformat.NotebookNode, cell_index: int) -> nbformat.NotebookNode | None:
        self.message_types.append(msg["msg_type"])
        return super().process_message(msg, cell, cell_index)


def test_in_a_jupyter_kernel_the_bar_is_one_output_updated_in_place_whose_last_state_stays() -> None:
    """A live notebook sees the bar's output updated in place; the executed notebook keeps its final line only."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from course_pkg.data import toy_data\n"
        "from course_pkg.models import RealNVP\n"
        "from course_pkg.train import train\n"
        "model = RealNVP(2, num_layers=2, hidden_features=8)\n"
        "losses = train(model, toy_data('two_moons', 256, seed=0), steps=200, device='cpu', progress=True)"
    )]
    client = RecordingClient(notebook, timeout=120, kernel_name="python3")
    client.execute()
    assert client.message_types.count("display_data") == 1 and "update_display_data" in client.message_types
    assert "stream" not in client.message_types, "no carriage-return stream for a static page to show"
    outputs = notebook.cells[0].outputs
    assert [output.output_type for output in outputs] == ["display_data"], outputs
    assert set(outputs[0].data) == {"text/plain"}, "a plain-text bar: no widget, no JavaScript"
    bar = outputs[0].data["text/plain"]
    assert re.fullmatch(final_bar(200, bar="#{10}"), bar), bar


def test_every_step_clips_the_gradient_norm(moons: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    norms = []
    clip = nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm: float) -> Tensor:  # noqa: ANN001
        norms.append(max_norm)
        return clip(parameters, max_norm)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", recording_clip)
    train(RealNVP(2, num_layers=2, hidden_features=8), moons, steps=4, device="cpu", progress=False, max_grad_norm=0.5)
    assert norms == [0.5] * 4


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def log_prob(self, x: Tensor) -> Tensor:
        return self.weight * x.sum(dim=1) * float("nan")


def test_a_non_finite_loss_stops_training_with_the_step(moons: Tensor) -> None:
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(NaNModel(), moons, steps=3, device="cpu", progress=False)


def test_dequantized_image_model_trains_on_integer_pixels() -> None:
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    model = DequantizedModel(MultiScaleRealNVP((1, 4, 4), num_scales=2, hidden_channels=4))
    before = [parameter.detach().clone() for parameter in model.parameters()]
    losses = train(model, pixels, steps=3, batch_size=16, device="cpu", progress=False)
    assert all(math.isfinite(loss) for loss in losses)
    # uniform noise is the best model of uniform pixels: 8 bits per dimension, a fresh model does worse
    assert losses[0] / (16 * math.log(2)) > 8
    assert all(not torch.equal(b, a) for b, a in zip(before, model.parameters(), strict=True))


def test_bad_arguments_are_refused(moons: Tensor) -> None:
    model = RealNVP(2, num_layers=2, hidden_features=8)
    with pytest.raises(ValueError, match="steps >= 1"):
        train(model, moons, steps=0, device="cpu")
    with pytest.raises(ValueError, match=r"data tensor \[N, \.\.\.\]"):
        train(model, moons[:0], steps=1, device="cpu", progress=False)
