"""Held-out files the in-process scorer's tests cut lines from (the gate's own fixture files)."""

from __future__ import annotations

from codeassist.evaluation.lines import HeldOutFile
from tests.training.fixtures import code_file

VAL = [HeldOutFile(path=f"proj/held_{i}.py", language="python", text=code_file(20 + i)) for i in range(2)]
