"""The Colab notebooks run top to bottom on a CPU kernel (the laboratory notebook with few RL iterations)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = os.path.join(os.path.dirname(os.path.dirname(__file__)), "colab")
NOTEBOOKS = sorted(f for f in os.listdir(COLAB) if f.endswith(".ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, lab_cache, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("INFORM_JAX_LAB_CACHE", str(lab_cache))  # reuses the demo test's SFT policy and RMs
    monkeypatch.setenv("INFORM_JAX_NB_ITERATIONS", "2")
    monkeypatch.setenv("INFORM_JAX_NB_METHODS", "PPO")
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2
