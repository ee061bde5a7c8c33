"""Every flag of every script explains itself in `--help` (the text is the comment on the field's line)."""

import dataclasses

import pytest
import tyro._docstrings
from helpers import ROOT, load_script

SCRIPTS = sorted(
    p.stem for p in ROOT.glob("*_*.py") if p.stem.split("_")[0] in ("mappo", "coppo", "happo", "a2po", "qmix")
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_a_help_text(script):
    args = load_script(script).Args
    missing = [f.name for f in dataclasses.fields(args) if not tyro._docstrings.get_field_docstring(args, f.name, ())]
    assert not missing, f"{script}.py: flags without a help text: {missing}"
