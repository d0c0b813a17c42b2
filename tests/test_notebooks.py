"""The Colab notebooks run top to bottom on a CPU kernel, with their training runs shrunk by environment variables."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = os.path.join(os.path.dirname(os.path.dirname(__file__)), "colab")
NOTEBOOKS = sorted(f for f in os.listdir(COLAB) if f.endswith(".ipynb"))
EXPECTED = (
    "01_reward_hacking_lab.ipynb",
    "02_inform_training.ipynb",
    "03_csi_detection.ipynb",
    "04_eppo.ipynb",
    "05_decomposition.ipynb",
    "06_pure_losses.ipynb",
)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, lab_cache, monkeypatch):
    # the kernels inherit the session's JAX compilation cache (tests/conftest.py): the demo test's PPO programs and
    # one notebook's sampler, train steps and k-means load from disk in the next
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("INFORM_JAX_LAB_CACHE", str(lab_cache))  # reuses the demo test's SFT policy and RMs
    monkeypatch.setenv("INFORM_JAX_NB_ITERATIONS", "2")  # RL iterations
    monkeypatch.setenv("INFORM_JAX_NB_METHODS", "PPO")
    monkeypatch.setenv("INFORM_JAX_NB_STEPS", "8")  # reward-model training steps
    # RL at the laboratory's learning rate (notebooks 03 and 04 default to 1e-3): the same PPO programs as notebook 01
    monkeypatch.setenv("INFORM_JAX_NB_ACTOR_LR", "1e-4")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' output folders (tempfile) go with the test's
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_notebooks_install_the_package_from_a_source_set_at_the_top_and_pick_the_runtimes_devices():
    for name in NOTEBOOKS:
        cells = [c for c in nbformat.read(os.path.join(COLAB, name), as_version=4).cells if c.cell_type == "code"]
        first = cells[0].source.splitlines()
        # not on PyPI: a clone's path or a pip URL set at the top, installed only where the package is missing
        source_line = next(i for i, line in enumerate(first) if line.startswith("INFORM_JAX_SOURCE = "))
        assert first[source_line + 1 : source_line + 3] == ["try:", "    import inform_jax  # noqa: F401"], name
        assert "%pip install -q {source}" in cells[0].source and "inform-jax\n" not in cells[0].source, name
        # JAX takes the runtime's accelerator: no notebook pins the CPU (the tests set JAX_PLATFORMS themselves)
        assert all("JAX_PLATFORMS" not in c.source for c in cells), name
        assert "jax.devices()" in cells[1].source, name


def test_there_are_notebooks():
    assert tuple(NOTEBOOKS) == EXPECTED
