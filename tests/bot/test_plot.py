"""`mimic eval --plot RUN_DIR`: the training curve as a PNG, from history.json alone."""

import json
from pathlib import Path

import pytest

from bot.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def write_history(run: Path, points: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "history.json").write_text(json.dumps({
        "model_config": {"arch": "gru", "hidden": 16, "layers": 1}, "chars_per_step": 256, "history": points}))
    return run


def test_plot_writes_a_png_beside_the_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    points = [{"step": i, "loss": 5.0 / i} for i in range(1, 301)]
    for p in points[99::100]:
        p["val_bpc"] = 8.0 / p["step"] ** 0.5
    run = write_history(tmp_path / "run", points)
    assert main(["eval", "--plot", str(run)]) == 0
    out = run / "training-curve.png"
    assert out.read_bytes().startswith(PNG)
    assert str(out) in capsys.readouterr().err


def test_plot_to_a_chosen_file_from_a_real_run(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "curve.png"
    assert main(["eval", "--plot", str(tiny_run), "--png", str(out)]) == 0
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 5000


@pytest.mark.parametrize("history,needle", [
    (None, "no history.json"),
    ("not json", "not a training history"),
    ({"history": [{"loss": 1.0}]}, "not a training history"),
    ({"history": []}, "no training steps yet"),
])
def test_bad_run_directory_is_one_line_and_exit_2(tmp_path: Path, capsys, history, needle) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if history is not None:
        (run / "history.json").write_text(history if isinstance(history, str) else json.dumps(history))
    assert main(["eval", "--plot", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mimic:")]
    assert len(err) == 1 and needle in err[0], err


def test_missing_matplotlib_names_the_install_command(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    run = write_history(tmp_path / "run", [{"step": 1, "loss": 1.0}])
    assert main(["eval", "--plot", str(run)]) == 2
    assert "pip install 'mimic[eval]'" in capsys.readouterr().err
