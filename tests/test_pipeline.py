"""End to end: the whole DAG on tiny params, once through DVC and once through Snakemake."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
import yaml
from tiny_project import make_project, run

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")


def make_repo(project: Path) -> Path:
    """A fresh clone is a git + DVC repository; make the copy one too."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run(["dvc", "init", "-q"], project)
    return project


def check_results(project: Path) -> dict:
    metrics = json.loads((project / "metrics.json").read_text())
    assert set(metrics["image"]) == {"in_dist", "held_out"}
    assert set(metrics["video"]) == {"comp_easy", "comp_medium", "comp_hard"}
    for entry in list(metrics["image"].values()) + list(metrics["video"].values()):
        for method in ("maggie", "mask_as_alpha"):
            assert entry[method]["MAD"] >= 0
    for name in ("tables.md", "image_table.csv", "mad_per_source.png", "training_curves.png", "mattes_grid.png",
                 "comparison.md", "methods_grid.png", "grad_per_source.png"):
        assert (project / "reports" / name).stat().st_size > 0, name
    # Every method of the tiny preset was trained (the baseline) and evaluated by its own stages.
    comparison = metrics["comparison"]
    assert set(comparison) == {"maggie", "mask_as_alpha", "closed_form", "mgm_tcvom"}
    for method, entry in comparison.items():
        assert set(entry["image"]) == {"in_dist", "held_out"} and len(entry["video"]) == 3, method
    assert (project / "models/baselines/mgm_tcvom/video/best.safetensors").is_file()
    # One block per method with its own predictions (MaGGIe, closed_form, mgm_tcvom); the guidance
    # mask is every block's second column, not a block of its own.
    stem = "image/in_dist/sim01_coarse28.png"
    previews = [project / "eval/previews" / stem] + [project / "eval/previews/methods" / m / stem
                                                     for m in ("closed_form", "mgm_tcvom")]
    tile = min(cv2.imread(str(p)).shape[0] for p in previews)
    assert cv2.imread(str(project / "reports" / "methods_grid.png")).shape[0] == 3 * tile
    table = (project / "reports" / "comparison.md").read_text()
    assert "| mgm_tcvom | in_dist |" in table and "| closed_form | comp_hard |" in table
    methods = sorted(p.relative_to(project / "eval" / "methods").parts[0]
                     for p in (project / "eval" / "methods").rglob("*.json"))
    assert methods.count("closed_form") == methods.count("mgm_tcvom") == 2 * 3 + 3
    # The report opens with the headline table: MaGGIe against its guidance per subset and split, then
    # the video stage's dtSSD beside its image stage's (its format; the tiny run's figures mean nothing).
    tables = (project / "reports" / "tables.md").read_text().splitlines()
    assert tables[0] == "## MaGGIe against its guidance"
    header = next(i for i, line in enumerate(tables) if line.startswith("| evaluation |"))
    assert tables[header] == "| evaluation | MaGGIe MAD | mask MAD | ratio | below the mask in |"
    rows = [line.split(" | ") for line in tables[header + 2:header + 7]]
    assert [r[0] for r in rows] == ["| image in_dist (mean of 3)", "| image held_out (mean of 3)",
                                    "| video comp_easy", "| video comp_medium", "| video comp_hard"]
    for r in rows:
        assert float(r[1]) >= 0 and float(r[3]) >= 0 and r[4].rstrip(" |").split("/")[1] in ("3", "1")
    assert any(line.startswith("Below the mask in ") and " of 9 evaluations" in line for line in tables)
    assert "| split | video stage dtSSD | image stage dtSSD | video stage MAD | image stage MAD |" in tables
    head = metrics["headline"]
    assert set(head["image"]) == {"in_dist", "held_out"} and set(head["video_vs_image_stage"]) == set(head["video"])
    evals = sorted(p.relative_to(project).as_posix() for p in (project / "eval" / "image").rglob("*.json"))
    assert len(evals) == 2 * 3  # subsets x mask sources of the tiny preset
    # The video network also on the guidance of this project's flow tracker, in the report by guidance source.
    tracked = json.loads((project / "eval/tracked_masks/flow/summary.json").read_text())
    assert set(tracked["splits"]) == set(metrics["video"])
    assert all(0 <= v["mean_iou"] <= 1 and v["frames"] > 0 for v in tracked["splits"].values())
    for split in metrics["video"]:
        row = json.loads((project / f"eval/video_masks/flow/{split}.json").read_text())
        assert row["guidance"] == "flow" and row["count"] > 0
        # Another guidance than the test data's: the mask-as-alpha row differs.
        assert row["mask_as_alpha"]["MAD"] != metrics["video"][split]["mask_as_alpha"]["MAD"]
    assert set(metrics["video_guidance"]["comp_hard"]) == {"test data", "flow"}
    assert "| split | guidance | MaGGIe MAD | guidance MAD | ratio | MaGGIe dtSSD | tracker IoU |" in tables
    return metrics


EDITED = ("src/maggie/data/synth/scenes.py", "src/maggie/data/augment.py", "src/maggie/evaluation/report.py")


def importers(project: Path, rel: str) -> set[str]:
    """The DVC stages of ``project`` whose module's import closure holds ``rel`` (what an edit must make stale)."""
    import sys

    sys.path.insert(0, str(project / "src"))
    from maggie.config.code_deps import SRC, stage_closure
    from maggie.config.dag import load_stages

    target = (project / rel).resolve()
    out = set()
    for st in load_stages(project):
        module = st.cmd.split("-m maggie.stages.")[1].split()[0]
        closure = {(project / "src" / f.relative_to(SRC)).resolve() for f in stage_closure(module)}
        if target in closure:
            out.add(st.name.split(":")[-1])
    return out


def edit(project: Path, rel: str) -> str:
    path = project / rel
    old = path.read_text()
    path.write_text(old + "\n# edited by the test\n")
    return old


def test_dvc_repro_runs_the_whole_dag(tmp_path):
    project = make_repo(make_project(tmp_path / "dvc"))
    run(["dvc", "repro"], project, timeout=900)
    check_results(project)
    # Nothing left to do: every stage is cached and up to date.
    status = run(["dvc", "status"], project).stdout
    assert "changed" not in status, status
    # A code change makes stale exactly the stages whose module imports the edited file.
    for rel in EDITED:
        old = edit(project, rel)
        changed = set(json.loads(run(["dvc", "status", "--json"], project).stdout))
        expected = importers(project, rel)
        assert expected and changed == expected, (rel, changed ^ expected)
        (project / rel).write_text(old)
    assert "changed" not in run(["dvc", "status"], project).stdout
    # A parameter change (what `dvc exp run -S train.video.max_iter=3` makes) touches exactly the
    # stages that declare it: the video stage, not the image training or the image evaluations.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["video"]["max_iter"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert set(changed) == {"train_video", "train_baseline_video@mgm_tcvom"}, changed


def test_snakemake_runs_the_same_dag(tmp_path):
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake is not installed")
    project = make_repo(make_project(tmp_path / "smk"))  # the workflow asks DVC for the stages
    run(["snakemake", "--cores", "2", "all"], project, timeout=900)
    check_results(project)
    assert "Nothing to be done" in run(["snakemake", "-n", "--cores", "2", "all"], project).stdout
    assert (project / "logs" / "report.log").stat().st_size > 0
    # A code change reruns exactly the rules whose module imports the edited file (then what follows
    # from their new outputs), as with DVC.
    for rel in EDITED:
        old = edit(project, rel)
        plan = run(["snakemake", "-n", "--cores", "2", "all"], project).stdout
        direct = {rule(n) for n in importers(project, rel)}
        assert triggered(plan, "updated input files") <= direct, rel
        assert planned(plan) == downstream(project, direct), rel
        (project / rel).write_text(old)
        subprocess.run(["touch", "-d", "2000-01-01", str(project / rel)], check=True)
    # A params edit reruns exactly the rules whose stage declares the key (the rule carries the values).
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["video"]["max_iter"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    plan = run(["snakemake", "-n", "--cores", "2", "all"], project).stdout
    direct = {"train_video", "train_baseline_video__mgm_tcvom"}
    assert triggered(plan, "params have changed") == direct, plan[-2000:]
    assert planned(plan) == downstream(project, direct)


def planned(plan: str) -> set[str]:
    """The rules a Snakemake dry run would run (group targets and ``all`` left out)."""
    import re

    return {r for r in re.findall(r"^rule (\S+):$", plan, flags=re.M) if "__" in r or r in STAGE_RULES}


STAGE_RULES = {"pull", "train_image", "train_video", "evaluate_video", "evaluate_video_frames", "qualitative", "report"}


def downstream(project: Path, rules: set[str]) -> set[str]:
    """``rules`` and every rule that (transitively) reads their outputs: what ``dvc repro`` reruns when the
    outputs change."""
    import sys

    sys.path.insert(0, str(project / "src"))
    from maggie.config.dag import load_stages, resolve_inputs

    stages = load_stages(project)
    by_rule = {rule(s.name.split(":")[-1]): s for s in stages}
    out = set(rules)
    changed = True
    while changed:
        changed = False
        made = {o for r in out for o in by_rule[r].outs}
        for name, s in by_rule.items():
            if name not in out and made & set(resolve_inputs(s, stages, project)):
                out.add(name)
                changed = True
    return out


def rule(stage_name: str) -> str:
    import re

    return re.sub(r"\W", "_", stage_name.replace("@", "__"))


def triggered(plan: str, reason: str) -> set[str]:
    """Rules a Snakemake dry run plans for ``reason`` itself (each job's ``reason:`` line), not because
    another job updates their inputs."""
    out: set[str] = set()
    current = None
    for line in plan.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            current = line[5:-1]
        elif line.startswith("reason:") and current and reason in line[7:].lower():
            out.add(current)
    return out
