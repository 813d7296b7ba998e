"""``secateurs prune --latency``: the command line reaches sc.prune(latency=...)."""

import json
import subprocess
import sys
from pathlib import Path

import secateurs as sc
from secateurs.hardware import prune

REPO = Path(__file__).resolve().parents[2]


def test_sc_prune_is_the_entry_that_takes_a_latency():
    assert sc.prune is prune


def test_cli_prune_to_a_latency(tmp_path):
    env = {"PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "SECATEURS_CACHE": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "secateurs", "prune", "mlp", "--latency", "0.8", "--granularity",
                        "neuron", "--batch-size", "2", "--round-to", "2", "--compact", "-q", "-o", tmp_path / "out"],
                       check=False, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = json.loads((tmp_path / "out" / "metrics.json").read_text())["stages"][1]
    assert row["latency_target"] == 0.8 and row["latency"] > 0
    assert list((tmp_path / "cache" / "latency").glob("*.json"))


def test_cli_latency_without_channels_is_one_line_exit_2(capsys):
    from secateurs import cli

    assert cli.main(["prune", "mlp", "--latency", "0.5", "-o", "unused"]) == 2
    err = capsys.readouterr().err
    assert "granularity channel" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
