"""A beta sweep survives an exploding configuration; the paper-table command works end to end."""

import json
import subprocess
import sys

from tau2.continual_learning.supervised import split_digits
from tau2.continual_learning.supervised.paper_table import main as paper_table_main
from tau2.continual_learning.supervised.sweep import vib_beta_sweep


def test_vib_beta_sweep_reports_the_exploding_configuration_as_crashed():
    tasks = split_digits(seed=0)[:2]
    config = {
        "lr": 0.05,
        "cl_algorithm": "vib_replay",
        "cl_params": {"memory_size": 40},
        "progress_bar": False,
    }
    results = vib_beta_sweep(
        tasks,
        [(1e-3, 1e-3), (1e35, 1.0), (0.0, 0.0)],
        config,
        num_epochs=1,
        hidden_sizes=(64,),
        bottleneck_dim=16,
    )
    assert [r.status for r in results] == ["ok", "crashed", "ok"]
    assert "LossExplosionError" in results[1].error and results[1].metrics is None
    assert results[0].metrics["class_il"]["num_tasks"] == 2
    assert results[2].params == {"beta_1": 0.0, "beta_2": 0.0}


def test_paper_table_command_on_a_tiny_synthetic_file(tmp_path, capsys):
    data = tmp_path / "tasks.pt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tau2.continual_learning.supervised.paper_table",
            "--make-demo",
            str(data),
        ],
        check=True,
        capture_output=True,
    )
    table = tmp_path / "table.md"
    args = [
        "--data",
        str(data),
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--memory-size",
        "30",
        "--hidden-size",
        "8",
        "--markdown",
        str(table),
    ]
    paper_table_main(args)
    rows = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [r["method"] for r in rows] == ["ER (simple)", "ER + reservoir", "ER + reservoir + LARS"]
    assert all(r["acc_mean"] > 0 and r["score"] == "nmse" for r in rows)
    text = table.read_text()
    assert "| ER + reservoir + LARS |" in text and "S3 final" in text
