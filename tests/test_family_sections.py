"""The four MA-MuJoCo scripts are one file except for the algorithm, and so are the four GRF scripts, as the SMAC
scripts are (tests/test_smac_shared_sections.py): every line after the module docstring lies in a banner section,
every `# TRY NOT TO MODIFY:` section is the same text in the four scripts of a suite, and the `# ALGO LOGIC:`
sections are each script's own. The pure functions an algorithm has on both suites are the same text on both."""

import ast
import re

import pytest
from helpers import BANNER, ROOT, sections

ALGOS = ["mappo", "coppo", "happo", "a2po"]
SUITES = ["mamujoco", "grf"]
SCRIPTS = [f"{algo}_{suite}" for suite in SUITES for algo in ALGOS]


def shared(name):
    return {k: v for k, v in sections(name).items() if k[0] == "TRY NOT TO MODIFY"}


def algo_logic(name):
    return {k: v for k, v in sections(name).items() if k[0] == "ALGO LOGIC"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_line_after_the_docstring_lies_in_a_section(script):
    source = (ROOT / f"{script}.py").read_text()
    docstring_end = ast.parse(source).body[0].end_lineno
    rest = source.splitlines()[docstring_end:]
    first_banner = next(i for i, line in enumerate(rest) if BANNER.match(line))
    assert not any(line.strip() for line in rest[:first_banner]), f"{script}.py has code before its first banner"
    assert len(shared(script)) >= 5 and algo_logic(script), f"{script}.py has too few sections to compare"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not s.startswith("a2po")])
def test_shared_sections_are_identical_to_a2po(script):
    reference = shared(f"a2po_{script.split('_')[1]}")
    other = shared(script)
    assert sorted(other) == sorted(reference), "the same shared sections, in every script of a suite"
    for key, text in reference.items():
        assert other[key] == text, f"section '{key[1]}' of {script}.py differs from the A2PO script's"
    assert algo_logic(script) != algo_logic(f"a2po_{script.split('_')[1]}"), "the algorithm is the script's own"


PURE = {"mappo": ["surrogate_loss"], "coppo": ["surrogate_loss"], "happo": ["surrogate_loss"], "a2po": []}
COMMON = ["compute_gae", "huber", "value_loss_fn", "ValueNorm"]


@pytest.mark.parametrize("algo", ALGOS)
def test_an_algorithms_pure_functions_are_the_same_text_on_both_suites(algo):
    for fn in PURE[algo] + COMMON:
        texts = set()
        for suite in SUITES:
            source = (ROOT / f"{algo}_{suite}.py").read_text()
            m = re.search(rf"^(def|class) {fn}\b.*?(?=^\S)", source, re.S | re.M)
            assert m, f"{algo}_{suite}.py has no {fn}"
            texts.add(m.group(0).rstrip())
        assert len(texts) == 1, f"{fn} differs between {algo}_mamujoco.py and {algo}_grf.py"
