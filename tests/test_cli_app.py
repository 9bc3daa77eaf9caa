"""``ovseg app``: a port in use and a missing GPU are clear errors before any model loads."""

from __future__ import annotations

import socket

import pytest

import ovseg.pipeline
from ovseg.cli import main


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no model may load")

    monkeypatch.setattr(ovseg.pipeline, "Segmenter", refuse)


def test_port_in_use_is_a_clear_error(no_models, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["app", "--sam", "tiny-random", "--clip", "tiny-random", "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "in use" in err and "--port" in err
    assert "Traceback" not in err


def test_cuda_without_a_gpu_is_a_clear_error(no_models, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["app", "--device", "cuda:0", "--port", "1"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_ctrl_c_in_any_subcommand_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import ovseg.eval.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ovseg.eval.runner, "evaluate", interrupted)
    code = main(["eval", "--data", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert code == 130 and capsys.readouterr().err == "ovseg eval: interrupted\n"
