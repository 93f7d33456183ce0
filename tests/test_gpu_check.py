"""benchmarks/gpu_check.py, the one-run CUDA check, tried as it is meant to be tried on a CPU (--quick): the
sections run in their own processes, a failing one is reported without stopping the rest, and everything
lands in the few files a GPU machine sends back."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_quick_run_writes_summary_log_and_results(tmp_path) -> None:
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(out), "--quick", "--device", "cpu",
                          "--sections", "env,drift,pipeline"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.json", "summary.md"]
    results = json.loads((out / "results.json").read_text())
    assert [k for k in results["sections"]] == ["env", "drift", "pipeline"]
    assert all(v["status"] == "ok" for v in results["sections"].values())
    rows = results["sections"]["pipeline"]["figures"]["rows"]
    assert rows and all(r["fps"] > 0 and 0 <= r["plumbing"] < 1 for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| fp32 |" in summary and "| bf16 |" in summary and "Whole pipeline" in summary


def test_failing_section_is_reported_and_the_rest_run(tmp_path) -> None:
    out = tmp_path / "out"
    # A training run on footage that is not there fails; env still runs after it.
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(out), "--quick", "--device", "cpu",
                          "--sections", "train,env", "--train-steps", "1", "--train-args", "--data /nonexistent"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "not ok: train" in res.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["sections"]["train"]["status"].startswith("exit") and results["sections"]["env"]["status"] == "ok"
    assert "last lines:" in (out / "summary.md").read_text()


def test_unknown_section_is_refused(tmp_path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(tmp_path / "o"), "--sections", "env,gpu"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "--sections: unknown gpu" in res.stderr


def test_spent_budget_skips_sections_and_still_writes_the_files(tmp_path) -> None:
    # --budget bounds the whole run (the GPU machine ends the command at its own limit and returns only
    # what was written): a section the budget cannot fit is recorded as skipped, not started.
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(out), "--quick", "--device", "cpu",
                          "--sections", "env,flow", "--budget", "5"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "not ok: env, flow" in res.stdout
    results = json.loads((out / "results.json").read_text())
    assert {k: v["status"] for k, v in results["sections"].items()} == {"env": "skipped (budget spent)",
                                                                         "flow": "skipped (budget spent)"}


def _moving_clips(data: Path) -> Path:
    """data/clips as the train section reads it, made here: two short pans over blurred noise to train on and
    carphone_pristine.mp4 (the name the section validates on), 128x72, 10 frames each (mp4v through OpenCV)."""
    clips = data / "clips"
    clips.mkdir(parents=True)
    for seed, (name, (dx, dy)) in enumerate({"pan": (2, 0), "tilt": (0, 2), "carphone_pristine": (2, 1)}.items()):
        noise = np.random.default_rng(seed).random((96, 160, 3)).astype(np.float32)
        big = cv2.GaussianBlur(noise, (0, 0), 2.0)
        big = ((big - big.min()) / (big.max() - big.min()) * 255).astype(np.uint8)
        out = cv2.VideoWriter(str(clips / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (128, 72))
        assert out.isOpened(), "OpenCV cannot write mp4v here"
        for k in range(10):
            out.write(big[k * dy:k * dy + 72, k * dx:k * dx + 128])
        out.release()
    return data


def test_train_plan_trains_its_jobs_at_once_and_exports_each(tmp_path) -> None:
    # Two tiny runs share the section's window; each plans its schedule to end inside it (--time-budget)
    # and comes back as a weight file with its report. The footage is made here: no shared data needed.
    data = _moving_clips(tmp_path / "data")
    plan = tmp_path / "plan.json"
    # One thread each: two runs of two OpenMP threads on a 2-core machine slow each other down 100-fold.
    # A 12-step probe (the quick run's 4 end while the other job still solves its flows) times the rate
    # the two jobs reach together.
    small = ["--val-pairs", "2", "--val-every", "0", "--threads", "1", "--loader-threads", "0", "--budget-probe", "12"]
    plan.write_text(json.dumps({"jobs": [
        {"name": "a_x2", "scale": 2, "preset": "test", "train": small, "export": ["--description", "a"]},
        {"name": "b_x4", "scale": 4, "preset": "test", "train": small + ["--config", '{"time_input": true}',
                                                                         "--gaps", "2,3"]}]}))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(out), "--quick", "--device", "cpu",
                          "--sections", "train", "--train-plan", str(plan), "--train-timeout", "60",
                          "--train-data", str(data)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    names = {p.name for p in out.iterdir()}
    assert {"a_x2.safetensors", "b_x4.safetensors", "a_x2_train.log", "b_x4_report.md"} <= names
    results = json.loads((out / "results.json").read_text())
    assert [k for k in results["sections"]] == ["train_a_x2", "train_b_x4", "export_a_x2", "export_b_x4"]
    # Both ended their own schedules before the window closed, not at its SIGTERM.
    assert all(v["status"] == "ok" for v in results["sections"].values())
    summary = (out / "summary.md").read_text()
    assert summary.count("-> the schedule ends at step") == 2
    from vsstar.model import load_model
    assert load_model(str(out / "b_x4.safetensors")).config.time_input


def test_bad_train_plan_is_refused_before_any_section(tmp_path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": [{"name": "../x", "scale": 3, "preset": "test"}]}))
    res = subprocess.run([sys.executable, str(SCRIPT), "run", str(tmp_path / "o"), "--quick", "--device", "cpu",
                          "--sections", "env,train", "--train-plan", str(plan)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0 and "--train-plan: job 0 needs a unique name" in res.stderr
    assert not (tmp_path / "o").exists()


def test_shipped_plans_fit_their_init_weights() -> None:
    # A plan waits for a GPU window; a job whose --init no longer fits its config (a bundled file that changed
    # shape) would only fail there. Every job's config is built and initialised as training.train does it.
    from training.checkpoint import load_net
    from training.train import build_config, build_parser, fit_init
    from vsstar.model.star import StarNet

    plans = sorted((ROOT / "training" / "plans").glob("*.json"))
    assert plans
    for plan in plans:
        for job in json.loads(plan.read_text())["jobs"]:
            args = build_parser().parse_args(["--run-dir", "unused", "--scale", str(job["scale"]),
                                              "--preset", job["preset"], *job["train"]])
            if not args.init:
                continue
            net = StarNet(build_config(args))
            theirs = load_net(ROOT / args.init, what="init")[0].state_dict()
            where = f"{plan.name}: {job['name']}"
            # The same tensors by name; with --init-partial only scale-dependent shapes may differ, and most of
            # the parameters still come from the file (without it fit_init refuses any mismatch).
            assert set(net.state_dict()) == set(theirs), where
            fresh = fit_init(net, theirs, args.init_partial, args.init)
            own = net.state_dict()
            assert sum(own[k].numel() for k in fresh) < 0.5 * sum(v.numel() for v in own.values()), where
