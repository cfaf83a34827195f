"""The core as a library (``docs/api.md``, its second example): it runs as written, in this process:
torchvision's ResNet18 with the gate, SenseMode at budget 0.5 from its sensitivities, a plain
torch loop, the average network at evaluation (the imports: tests/e2e/test_layout.py)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.helpers import ROOT


def test_the_library_example_trains_a_torchvision_resnet_with_sensemode(capsys):
    text = (ROOT / "docs" / "api.md").read_text()
    _, code = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    example: dict = {"__name__": "library_example"}
    exec(compile(code, "docs/api.md", "exec"), example)  # noqa: S102 - the docs' own code
    model, s, p = example["model"], example["s"], example["p"]
    assert model.num_blocks == 8 and s.shape == (8,) and not model.training
    assert sum(model.gate.survival) / 8 == pytest.approx(0.5, abs=1e-6)  # the budget, exactly
    assert model.gate.survival == p.tolist() and model.gate.sensitivity == s.tolist()
    assert torch.isfinite(example["loss"]) and example["depth"] == pytest.approx(4.0)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and printed[-1].startswith("expected depth 4.0 of 8; predicted [")
