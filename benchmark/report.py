# Benchmark report: tables and plots from the runs' TensorBoard logs. README: benchmark/README.md.
"""Turn a folder of finished runs into the talk's tables and learning curves (Markdown + PNG + JSON).

Reads every run folder `{task}__{exp_name}__{seed}__{unix_time}` with TensorBoard's own EventAccumulator
and writes, into --out: the SMAC (and GRF) win-rate table, median (std) over seeds, best in bold, with an
"overall" row; learning curves per task (median, interquartile band); aggregate IQM with 95% stratified
bootstrap confidence intervals across tasks; the training-time table normalised to MAPPO = 1.00 (sampling
+ updating); the GRF behaviour table; report.md holding all of them; results.json with every number.

Run: python benchmark/report.py --runs-dir benchmark/runs/smac-quick --out benchmark/results/smac-quick

Implementation details
1. A run counts when its folder has summary.json (finished); --include-unfinished adds the newest
   unfinished folder of a (task, exp_name, seed) that has no finished one. Older duplicates are ignored.
2. Algorithm = exp_name up to the first "-" without its "_smac"/"_mamujoco"/"_grf" suffix ("a2po_smac-smax-1M"
   -> "a2po"); setting = the rest ("smax-1M"); family = the setting without the budget ("smax"). Tables,
   curves and IQMs are made per (suite, family): SMAC on sc2 and on smax never share a table or an
   "overall" row, while one family's maps may differ in budget (MMM 5M, 6h_vs_8z 15M).
3. Suite from the script name in exp_name ("_smac", "_mamujoco", "_grf"), else from the logged tags:
   eval/goals -> GRF, eval/win_rate -> SMAC, else MA-MuJoCo (return).
4. Final value = the value at the step of the last evaluation (a metric missing there, e.g. GRF's
   pass_rate of games without a pass attempt, is NaN, not an older value). A step logged twice (a
   resumed run redoing iterations after its last checkpoint) keeps the later value.
5. Win-rate table: median and std (numpy, ddof=0) over seeds in %; "overall" = mean over the maps every
   algorithm has of the medians (and of the stds), which reproduces the talk's overall row.
6. IQM: interquartile mean (scipy.stats.trim_mean, 25% cut each side) of all (run, task) scores of an
   algorithm; CI: percentile bootstrap, 2000 resamples, runs resampled with replacement within each task
   (rliable's stratified bootstrap) via scipy.stats.bootstrap with one sample per task (paired=False
   resamples each independently). rliable itself does not import here (arch vs pandas 3). Scores: win
   rate for SMAC/GRF; for MA-MuJoCo the final return min-max normalised per task over the report's runs.
7. Training time: per run the sum of time/sampling_s and time/updating_s over its iterations minus the
   first --skip-first-iterations (JAX compilation, worker start-up), mean over seeds, normalised by MAPPO's
   total on the same task and setting (absolute times only where there is no MAPPO run).
"""

import argparse
import json
import os
import re
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmark"))
from launch import git_commit, machine  # noqa: E402  (one definition of the run's provenance)

ALGO_ORDER = ["mappo", "coppo", "happo", "a2po", "qmix"]  # the talk's SMAC table
ALGO_NAMES = dict(mappo="MAPPO", coppo="CoPPO", happo="HAPPO", a2po="A2PO", qmix="QMIX")  # as the talk writes them
MAP_ORDER = [
    "MMM",
    "3s_vs_5z",
    "2c_vs_64zg",
    "3s5z",
    "5m_vs_6m",
    "8m_vs_9m",
    "10m_vs_11m",
    "6h_vs_8z",
    "3s5z_vs_3s6z",
    "MMM2",
    "27m_vs_30m",
    "corridor",
]  # the talk's row order
# The talk's training-time table (MAPPO, CoPPO, HAPPO, A2PO; MAPPO = 1.00), by run-folder task name
TALK_TIMES = {
    "3s5z": (1.00, 1.02, 1.10, 1.30),
    "27m_vs_30m": (1.00, 1.00, 1.20, 1.19),
    "Humanoid-9_8": (1.00, 0.99, 1.12, 1.26),
    "Ant-4x2": (1.00, 1.01, 1.12, 1.05),
    "Humanoid-17x1": (1.00, 1.41, 1.39, 1.60),
    "5_vs_5": (1.00, 0.94, 1.13, 1.08),
}
BEHAVIOUR = [
    ("Assist", "eval/assists", 1.0),
    ("Goal", "eval/goals", 1.0),
    ("Lost", "eval/lost", 1.0),
    ("Pass", "eval/passes_completed", 1.0),
    ("Pass rate %", "eval/pass_rate", 100.0),
]


# ---------------------------------------------------------------- reading runs
def parse_run_name(name):
    """'3m__mappo_smac-smax-1M__2__1700000000' -> ('3m', 'mappo_smac-smax-1M', 2, 1700000000) or None."""
    parts = name.split("__")
    if len(parts) != 4 or not parts[2].lstrip("-").isdigit() or not parts[3].isdigit():
        return None
    return parts[0], parts[1], int(parts[2]), int(parts[3])


def algo_of(exp_name):
    stem = exp_name.split("-")[0]
    return re.sub(r"_(smac|mamujoco|grf)$", "", stem)


def setting_of(exp_name):
    return exp_name.split("-", 1)[1] if "-" in exp_name else ""


def family_of(setting):
    """The setting without its budget: "sc2-5M" -> "sc2", "10M" -> ""."""
    return "-".join(t for t in setting.split("-") if t and not re.fullmatch(r"\d+[kM]?", t))


def read_scalars(run_dir):
    """{tag: (steps, values)} sorted by step; a step logged twice keeps its later value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {}
        for e in acc.Scalars(tag):
            by_step[e.step] = e.value
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def load_runs(runs_dirs, include_unfinished=False):
    """Runs (dicts) of the given folders, one per (task, exp_name, seed); and a list of notes."""
    groups = defaultdict(list)
    for runs_dir in runs_dirs:
        for d in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
            parsed = parse_run_name(d.name)
            if d.is_dir() and parsed:
                groups[parsed[:3]].append((parsed[3], d))
    runs, unfinished_skipped = [], 0
    for (task, exp_name, seed), folders in sorted(groups.items()):
        folders.sort()
        finished = [d for _, d in folders if (d / "summary.json").is_file()]
        if finished:
            path, done = finished[-1], True
        elif include_unfinished:
            path, done = folders[-1][1], False
        else:
            unfinished_skipped += 1
            continue
        scalars = read_scalars(path)
        if not scalars:
            continue
        runs.append(
            dict(
                task=task,
                exp_name=exp_name,
                algo=algo_of(exp_name),
                setting=setting_of(exp_name),
                seed=seed,
                path=str(path),
                finished=done,
                scalars=scalars,
                suite=suite_of(exp_name, scalars),
            )
        )
    notes = []
    if unfinished_skipped:
        notes.append(
            f"{unfinished_skipped} (task, exp_name, seed) without a finished run left out "
            f"(--include-unfinished adds them)"
        )
    if include_unfinished and any(not r["finished"] for r in runs):
        notes.append(f"{sum(not r['finished'] for r in runs)} unfinished runs included")
    settings = defaultdict(set)
    for r in runs:
        r["family"] = family_of(r["setting"])
        settings[(r["family"], r["task"])].add(r["setting"])
    for r in runs:
        several = len(settings[(r["family"], r["task"])]) > 1
        r["label"] = f"{r['task']} ({r['setting']})" if several else r["task"]
    return runs, notes


def suite_of(exp_name, scalars):
    """From the script name in exp_name ("a2po_grf-..."), else from the logged tags."""
    stem = exp_name.split("-")[0]
    for suite in ("smac", "mamujoco", "grf"):
        if stem.endswith("_" + suite):
            return suite
    if "eval/goals" in scalars:
        return "grf"
    if "eval/win_rate" in scalars:
        return "smac"
    return "mamujoco"


def eval_tag(suite):
    return "eval/episodic_return" if suite == "mamujoco" else "eval/win_rate"


def final_value(run, tag):
    """Value of `tag` at the run's last evaluation step (NaN if not logged there)."""
    ref = run["scalars"].get(eval_tag(run["suite"]))
    if ref is None or tag not in run["scalars"] or len(ref[0]) == 0:
        return float("nan")
    steps, values = run["scalars"][tag]
    hit = np.nonzero(steps == ref[0][-1])[0]
    return float(values[hit[-1]]) if len(hit) else float("nan")


# ---------------------------------------------------------------- small helpers
def names(algos):
    return [ALGO_NAMES.get(a, a) for a in algos]


def order_algos(algos):
    algos = set(algos)
    return [a for a in ALGO_ORDER if a in algos] + sorted(algos - set(ALGO_ORDER))


def order_labels(runs):
    labels = {r["label"]: r["task"] for r in runs}
    rank = {m: i for i, m in enumerate(MAP_ORDER)}
    return sorted(labels, key=lambda lab: (rank.get(labels[lab], len(rank)), lab))


def by_family_and_label(runs):
    """[(family, label, runs of that row)] in table order."""
    out = []
    for family in sorted({r["family"] for r in runs}):
        fam = [r for r in runs if r["family"] == family]
        out += [(family, lab, [r for r in fam if r["label"] == lab]) for lab in order_labels(fam)]
    return out


def fmt_duration(seconds):
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def bold_best(cells, keys, higher_is_better=True):
    """Bold the cells whose key is the best (ties: all of them)."""
    finite = [k for k in keys if k is not None and np.isfinite(k)]
    if not finite:
        return cells
    best = max(finite) if higher_is_better else min(finite)
    return [f"**{c}**" if k is not None and np.isfinite(k) and np.isclose(k, best) else c for c, k in zip(cells, keys)]


def no_nan(obj):
    """NaN -> None, recursively (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [no_nan(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# ---------------------------------------------------------------- tables
def final_table(runs, tag, scale, decimals=1):
    """Median (std) over seeds of the final `tag` per (label, algo), best median in bold, "overall" row.
    Returns (markdown, {label: {algo: {"median", "std", "n"}}, "overall": {...}})."""
    algos, labels = order_algos(r["algo"] for r in runs), order_labels(runs)
    data = {lab: {} for lab in labels}
    for lab in labels:
        for a in algos:
            vals = np.array([final_value(r, tag) for r in runs if r["label"] == lab and r["algo"] == a]) * scale
            vals = vals[np.isfinite(vals)]
            if len(vals):
                data[lab][a] = dict(median=float(np.median(vals)), std=float(np.std(vals)), n=int(len(vals)))
    rows = []
    for lab in labels:
        keys = [data[lab][a]["median"] if a in data[lab] else None for a in algos]
        cells = [
            f"{data[lab][a]['median']:.{decimals}f} ({data[lab][a]['std']:.3g})" if a in data[lab] else "–"
            for a in algos
        ]
        seeds = sorted({data[lab][a]["n"] for a in algos if a in data[lab]})
        rows.append([lab, *bold_best(cells, keys), "/".join(map(str, seeds))])
    complete = [lab for lab in labels if all(a in data[lab] for a in algos)]
    overall = {}
    if complete:
        for a in algos:
            overall[a] = dict(
                median=float(np.mean([data[lab][a]["median"] for lab in complete])),
                std=float(np.mean([data[lab][a]["std"] for lab in complete])),
                n=len(complete),
            )
        cells = [f"{overall[a]['median']:.{decimals}f} ({overall[a]['std']:.3g})" for a in algos]
        rows.append(["overall", *bold_best(cells, [overall[a]["median"] for a in algos]), f"{len(complete)} maps"])
    return md_table(["Task", *names(algos), "seeds"], rows), dict(data, overall=overall)


def behaviour_table(runs):
    """GRF: mean (std) over seeds of the final per-game behaviour metrics, one table per task."""
    algos, out_md, out = order_algos(r["algo"] for r in runs), [], {}
    for lab in order_labels(runs):
        rows, out[lab] = [], {}
        for name, tag, scale in BEHAVIOUR:
            stats = {}
            for a in algos:
                vals = np.array([final_value(r, tag) for r in runs if r["label"] == lab and r["algo"] == a]) * scale
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    stats[a] = dict(mean=float(np.mean(vals)), std=float(np.std(vals)), n=int(len(vals)))
            out[lab][name] = stats
            cells = [f"{stats[a]['mean']:.2f} ({stats[a]['std']:.2f})" if a in stats else "–" for a in algos]
            rows.append(
                [
                    name,
                    *bold_best(
                        cells,
                        [stats[a]["mean"] if a in stats else None for a in algos],
                        higher_is_better=name != "Lost",
                    ),
                ]
            )
        out_md.append(
            f"**{lab}** (per game, mean (std) over seeds; bigger is better except Lost)\n\n"
            + md_table(["Metric", *names(algos)], rows)
        )
    return "\n\n".join(out_md), out


def time_table(runs, skip_first):
    """Wall time (sampling + updating) per algorithm, normalised to MAPPO = 1.00 on the same task/setting."""
    algos, rows, out = order_algos(r["algo"] for r in runs), [], {}
    for lab in order_labels(runs):
        out[lab] = {}
        for a in algos:
            parts = []
            for r in runs:
                if r["label"] == lab and r["algo"] == a and "time/sampling_s" in r["scalars"]:
                    s, u = (
                        r["scalars"]["time/sampling_s"][1][skip_first:],
                        r["scalars"]["time/updating_s"][1][skip_first:],
                    )
                    if len(s):
                        parts.append((float(s.sum()), float(u.sum()), len(s)))
            if parts:
                out[lab][a] = dict(
                    sampling_s=float(np.mean([p[0] for p in parts])),
                    updating_s=float(np.mean([p[1] for p in parts])),
                    iterations=parts[0][2],
                    runs=len(parts),
                )
        if not out[lab]:
            del out[lab]
            continue
        base = out[lab].get("mappo")
        cells = []
        for a in algos:
            t = out[lab].get(a)
            if t is None:
                cells.append("–")
                continue
            total = t["sampling_s"] + t["updating_s"]
            absolute = f"{fmt_duration(total)} ({fmt_duration(t['sampling_s'])}+{fmt_duration(t['updating_s'])})"
            if base:
                b = base["sampling_s"] + base["updating_s"]
                t.update(
                    normalised=total / b,
                    normalised_sampling=t["sampling_s"] / b,
                    normalised_updating=t["updating_s"] / b,
                )
                cells.append(f"{total / b:.2f} ({t['sampling_s'] / b:.2f}+{t['updating_s'] / b:.2f})<br>{absolute}")
            else:
                cells.append(absolute)
        iters = sorted({t["iterations"] for t in out[lab].values()})
        talk = TALK_TIMES.get(lab.split(" (")[0])
        rows.append([lab, *cells, "/".join(map(str, iters)), " / ".join(f"{x:.2f}" for x in talk) if talk else "–"])
    if not rows:
        return "", out
    return md_table(["Task", *names(algos), "iterations timed", "talk (MAPPO / CoPPO / HAPPO / A2PO)"], rows), out


# ---------------------------------------------------------------- aggregate IQM
def iqm(x, axis=-1):
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def iqm_with_ci(scores_per_task, n_resamples=2000, confidence=0.95, seed=0):
    """IQM of all scores and its stratified percentile-bootstrap CI; one array of run scores per task.
    The CI is NaN when a task has fewer than 2 runs (nothing to resample)."""
    from scipy.stats import bootstrap

    samples = [np.asarray(s, dtype=np.float64) for s in scores_per_task]
    point = float(iqm(np.concatenate(samples)))
    if any(len(s) < 2 for s in samples):
        return point, float("nan"), float("nan")
    res = bootstrap(
        samples,
        lambda *xs, axis: iqm(np.concatenate(xs, axis=axis), axis=axis),
        vectorized=True,
        paired=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate_scores(runs):
    """{(suite, family): {algo: {label: [scores]}}}: win rates, or per-task min-max normalised returns."""
    out = defaultdict(lambda: defaultdict(dict))
    for _, lab, rr in by_family_and_label(runs):
        vals = np.array([final_value(r, eval_tag(r["suite"])) for r in rr])
        if rr[0]["suite"] == "mamujoco" and np.isfinite(vals).any():
            lo, hi = np.nanmin(vals), np.nanmax(vals)
            vals = (vals - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(vals), 1.0, np.nan)
        for r, v in zip(rr, vals):
            if np.isfinite(v):
                out[(r["suite"], r["family"])][r["algo"]].setdefault(lab, []).append(float(v))
    return out


def aggregate_table(runs, n_resamples, seed, out_dir):
    rows, result = [], {}
    groups = aggregate_scores(runs)
    fig_rows = []
    for (suite, family), per_algo in sorted(groups.items()):
        what = "win rate" if suite != "mamujoco" else "normalised return"
        for a in order_algos(per_algo):
            tasks = per_algo[a]
            point, lo, hi = iqm_with_ci(list(tasks.values()), n_resamples=n_resamples, seed=seed)
            key = f"{suite}/{family}" if family else suite
            result.setdefault(key, {})[a] = dict(
                iqm=point, ci_low=lo, ci_high=hi, tasks=len(tasks), runs=sum(map(len, tasks.values()))
            )
            ci = f"[{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "n/a (a task has < 2 seeds)"
            rows.append(
                [key, what, ALGO_NAMES.get(a, a), f"{point:.3f}", ci, len(tasks), sum(map(len, tasks.values()))]
            )
            fig_rows.append((f"{key} {ALGO_NAMES.get(a, a)}", point, lo, hi))
    if not rows:
        return "", result
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.45 * len(fig_rows) + 1.2))
    for i, (_, point, lo, hi) in enumerate(fig_rows):
        if np.isfinite(lo):
            ax.plot([lo, hi], [i, i], lw=6, alpha=0.4, color="C0")
        ax.plot([point], [i], "k|", ms=14)
    ax.set_yticks(range(len(fig_rows)), [f[0] for f in fig_rows])
    ax.set_xlabel("IQM (95% stratified bootstrap CI)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out_dir / "aggregate_iqm.png", dpi=120)
    plt.close(fig)
    return md_table(["Suite", "score", "Algorithm", "IQM", "95% CI", "tasks", "runs"], rows), result


# ---------------------------------------------------------------- curves
def curve_stats(series):
    """Median and interquartile band over runs on a common step grid (each run interpolated, no extrapolation)."""
    grid = np.unique(np.concatenate([s for s, _ in series]))
    stack = np.full((len(series), len(grid)), np.nan)
    for i, (s, v) in enumerate(series):
        inside = (grid >= s[0]) & (grid <= s[-1])
        stack[i, inside] = np.interp(grid[inside], s, v)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(stack, [25, 50, 75], axis=0)
    return grid, q[1], q[0], q[2]


def plot_curves(runs, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    (out_dir / "curves").mkdir(parents=True, exist_ok=True)
    for family, lab, rr in by_family_and_label(runs):
        suite = rr[0]["suite"]
        tag, scale = eval_tag(suite), (1.0 if suite == "mamujoco" else 100.0)
        if not any(tag in r["scalars"] and len(r["scalars"][tag][0]) for r in rr):
            continue  # no evaluation logged (e.g. the speed preset's GRF run)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, a in enumerate(order_algos(r["algo"] for r in rr)):
            series = [
                r["scalars"][tag] for r in rr if r["algo"] == a and tag in r["scalars"] and len(r["scalars"][tag][0])
            ]
            if not series:
                continue
            grid, med, q1, q3 = curve_stats(series)
            ax.plot(grid, med * scale, color=f"C{i}", label=f"{ALGO_NAMES.get(a, a)} ({len(series)})")
            ax.fill_between(grid, q1 * scale, q3 * scale, color=f"C{i}", alpha=0.2)
        ax.set_title(f"{lab} ({family})" if family else lab)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return" if suite == "mamujoco" else "eval win rate %")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "curves" / f"{suite}_{safe_name(family + '_' + lab if family else lab)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


# ---------------------------------------------------------------- header and main
def header(title, command, runs_dirs, runs, notes):
    launches = []
    for d in runs_dirs:
        path = Path(d) / "launches.jsonl"
        if path.is_file():
            launches += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        f"# {title}",
        "",
        f"- commit: `{git_commit()}`",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- generated: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- runs: {len(runs)} from {', '.join(str(d) for d in runs_dirs)}",
    ]
    if launches:
        commits = sorted({entry["commit"] for entry in launches})
        machines = sorted({entry["machine"] for entry in launches})
        lines.append(f"- runs launched from commit(s): {', '.join(f'`{c}`' for c in commits)} on {'; '.join(machines)}")
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def embed_in_readme(readme, out_dir, parts, written):
    """Replace the text between README's `<!-- report:NAME -->` and `<!-- /report:NAME -->` lines with the
    report's parts (headings two levels down, links made relative to the README), so results shown in a
    README are the report step's output, never typed by hand."""
    begin, end = f"<!-- report:{out_dir.name} -->", f"<!-- /report:{out_dir.name} -->"
    text = readme.read_text() if readme.is_file() else ""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(
            f"error: {readme} needs one line '{begin}' followed by one line '{end}'. "
            f"Add both where the {out_dir.name} results should go, then rerun."
        )
    missing = [p for p in parts if p not in written]  # never a stale file of an earlier report
    if missing:
        raise SystemExit(
            f"error: --readme-parts {' '.join(missing)}: this report wrote no such part. "
            f"Parts written: {', '.join(written)}."
        )
    rel = Path(os.path.relpath(out_dir, readme.parent)).as_posix()
    body = []
    for part in parts:
        md = (out_dir / f"{part}.md").read_text()
        md = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)
        md = re.sub(r"\]\((?!https?://|/|#)([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", md)
        body.append(md.strip())
    pre, rest = text.split(begin, 1)
    post = rest.split(end, 1)[1]
    readme.write_text(pre + begin + "\n" + "\n\n".join(body) + "\n" + end + post)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", nargs="+", required=True, help="folder(s) holding the run folders")
    p.add_argument(
        "--out", default=None, help="output folder (default: benchmark/results/<name of the first runs dir>)"
    )
    p.add_argument("--include-unfinished", action="store_true", help="also use runs without summary.json")
    p.add_argument("--skip-first-iterations", type=int, default=1, help="iterations left out of the time table")
    p.add_argument("--bootstrap-samples", type=int, default=2000, help="bootstrap resamples of the IQM CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--readme",
        default=None,
        help="also copy the report into this Markdown file, between the lines <!-- report:NAME --> and "
        "<!-- /report:NAME --> (NAME = the --out folder's name), replacing what was there",
    )
    p.add_argument(
        "--readme-parts",
        nargs="+",
        default=None,
        help="with --readme: copy only these parts (file stems, e.g. smac_win_rate training_time), "
        "each with its own header, instead of the whole report.md",
    )
    opts = p.parse_args(argv)
    runs_dirs = [Path(d).resolve() for d in opts.runs_dir]
    out_dir = Path(opts.out or ROOT / "benchmark" / "results" / runs_dirs[0].name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmark/report.py", *argv])
    runs, notes = load_runs(runs_dirs, opts.include_unfinished)
    if not runs:
        raise SystemExit(
            f"error: no finished run folders in {', '.join(map(str, runs_dirs))}. "
            f"Launch some with benchmark/launch.py (or pass --include-unfinished)."
        )
    head = header("Benchmark report", command, runs_dirs, runs, notes)
    sections, results, written = [], dict(commit=git_commit(), command=command, runs=len(runs)), ["report"]

    def section(name, title, body, blurb=""):
        if not body:
            return
        sections.append(f"## {title}\n\n{blurb}{body}\n")
        written.append(name)
        (out_dir / f"{name}.md").write_text(header(title, command, runs_dirs, runs, notes) + "\n" + blurb + body + "\n")

    tables = [
        (
            "smac",
            "smac_win_rate",
            "SMAC win rate %",
            lambda rr: final_table(rr, "eval/win_rate", 100.0),
            "Final greedy evaluation, median (std) over seeds; best median in bold; overall = mean over maps.\n\n",
        ),
        (
            "grf",
            "grf_win_rate",
            "GRF win rate %",
            lambda rr: final_table(rr, "eval/win_rate", 100.0),
            "Final greedy evaluation, median (std) over seeds.\n\n",
        ),
        ("grf", "grf_behaviour", "GRF behaviour", behaviour_table, ""),
        (
            "mamujoco",
            "mamujoco_return",
            "MA-MuJoCo return",
            lambda rr: final_table(rr, "eval/episodic_return", 1.0, decimals=0),
            "Final evaluation return, median (std) over seeds.\n\n",
        ),
    ]
    for suite, name, title, make, blurb in tables:
        families = sorted({r["family"] for r in runs if r["suite"] == suite})
        for fam in families:
            md, results.setdefault(name, {})[fam or "all"] = make(
                [r for r in runs if r["suite"] == suite and r["family"] == fam]
            )
            several = len(families) > 1
            section(
                f"{name}_{safe_name(fam) or 'other'}" if several else name,
                f"{title} ({fam})" if fam and several else title,
                md,
                blurb,
            )
    md, results["aggregate_iqm"] = aggregate_table(runs, opts.bootstrap_samples, opts.seed, out_dir)
    section(
        "aggregate_iqm",
        "Aggregate IQM",
        md + "\n\n![IQM](aggregate_iqm.png)" if md else "",
        "Interquartile mean of the final scores over all (run, task) pairs, 95% stratified percentile "
        "bootstrap CI (scipy.stats.bootstrap, rliable's method).\n\n",
    )
    several = len({r["family"] for r in runs}) > 1
    timed = [dict(r, label=f"{r['label']} ({r['family']})") if several and r["family"] else r for r in runs]
    md, results["training_time"] = time_table(timed, opts.skip_first_iterations)
    section(
        "training_time",
        "Training time",
        md,
        f"Sampling + updating seconds summed over the iterations, leaving out the first "
        f"{opts.skip_first_iterations} of each run (compilation, start-up), "
        "mean over seeds; first line normalised to MAPPO = 1.00 (sampling+updating), second absolute.\n\n",
    )
    curves = plot_curves(runs, out_dir)
    section(
        "curves",
        "Learning curves",
        "\n".join(f"![{c.stem}](curves/{c.name})" for c in curves),
        "Greedy evaluation against env steps: median over seeds, band = interquartile range.\n\n",
    )
    (out_dir / "report.md").write_text(head + "\n" + "\n".join(sections))
    (out_dir / "results.json").write_text(json.dumps(no_nan(results), indent=1))
    print(f"wrote {out_dir / 'report.md'} ({len(runs)} runs, {len(curves)} curve plots)")
    if opts.readme:
        embed_in_readme(Path(opts.readme).resolve(), out_dir, opts.readme_parts or ["report"], written)
        print(f"updated {opts.readme} between its report:{out_dir.name} markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
