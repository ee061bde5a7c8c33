"""The four SMAC scripts are one file except for the algorithm: every `# TRY NOT TO MODIFY:` section
is the same text in all four, and each script's `# ALGO LOGIC:` parts are its own."""
import re

import pytest

from helpers import ROOT

SCRIPTS = ["mappo_smac", "coppo_smac", "happo_smac", "a2po_smac"]
BANNER = re.compile(r"^\s*# (TRY NOT TO MODIFY|ALGO LOGIC): (.*)$")


def sections(name):
    """{(kind, title): text} for every banner of the file; the text runs to the next banner."""
    out, key, lines = {}, None, []
    for line in (ROOT / f"{name}.py").read_text().splitlines():
        m = BANNER.match(line)
        if m:
            if key:
                out[key] = "\n".join(lines)
            key, lines = (m.group(1), m.group(2)), []
        elif key:
            lines.append(line)
    out[key] = "\n".join(lines)
    return out


def test_sections_parse_into_shared_and_algorithm_parts():
    parts = sections("mappo_smac")
    shared = [k for k in parts if k[0] == "TRY NOT TO MODIFY"]
    assert len(shared) >= 8 and ("ALGO LOGIC", "advantages and the simultaneous PPO update") in parts


@pytest.mark.parametrize("script", SCRIPTS[1:])
def test_shared_sections_are_identical_to_mappo(script):
    reference = {k: v for k, v in sections("mappo_smac").items() if k[0] == "TRY NOT TO MODIFY"}
    other = {k: v for k, v in sections(script).items() if k[0] == "TRY NOT TO MODIFY"}
    assert sorted(other) == sorted(reference), "the same shared sections, in every script"
    for key, text in reference.items():
        assert other[key] == text, f"section '{key[1]}' of {script}.py differs from mappo_smac.py"


@pytest.mark.parametrize("script", SCRIPTS[1:])
def test_the_update_is_the_algorithms_own(script):
    algo = [v for k, v in sections(script).items() if k[0] == "ALGO LOGIC" and k[1].startswith("advantages")]
    mappo = [v for k, v in sections("mappo_smac").items() if k[0] == "ALGO LOGIC" and k[1].startswith("advantages")]
    assert len(algo) == 1 and algo[0] != mappo[0]


def test_a2po_pure_functions_are_the_same_text_in_every_a2po_script():
    names = [p.stem for p in sorted(ROOT.glob("a2po_*.py"))]
    texts = {}
    for name in names:
        source = (ROOT / f"{name}.py").read_text()
        for fn in ("compute_gae", "compute_preopc", "adaptive_clip", "semi_greedy_pick", "semi_greedy_order"):
            m = re.search(rf"^def {fn}\(.*?(?=^\S)", source, re.S | re.M)
            assert m, f"{name}.py has no {fn}"
            texts.setdefault(fn, {})[name] = m.group(0).rstrip()
    for fn, by_script in texts.items():
        assert len(set(by_script.values())) == 1, f"{fn} differs between {sorted(by_script)}"
