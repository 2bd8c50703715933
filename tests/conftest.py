import importlib.util
import sys
from pathlib import Path

import torch

# Tests import their loop references as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

SEED_SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "seeds"


def load_seed_script(name: str):
    """Import ``scripts/seeds/<name>.py`` by path, as module ``seed_<name>``."""
    spec = importlib.util.spec_from_file_location(f"seed_{name}", SEED_SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_seed_script_with_result(name: str, tmp_path: Path) -> tuple[str, object]:
    """Run ``scripts/seeds/<name>.py --smoke`` into ``tmp_path / "results.md"``: the file's
    text and what the script's ``main`` returned."""
    out = tmp_path / "results.md"
    result = load_seed_script(name).main(["--smoke", "--out", str(out)])
    return out.read_text(), result


def run_seed_script(name: str, tmp_path: Path) -> str:
    """The results file written by ``scripts/seeds/<name>.py --smoke`` (a smoke test's input)."""
    return run_seed_script_with_result(name, tmp_path)[0]


# A small but real training run: 300 digits (240 train / 60 test), 3 steps of 64 per epoch.
TINY_RUN = {
    "epochs": 2,
    "batch_size": 64,
    "eval_every": 1,
    "progress": False,
    "threads": 1,
    "data": {"name": "digits", "subset": 300},
    "model": {"width": 64, "feature_dim": 32, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 16},
}


class Interrupt(Exception):
    """Raised by ``stop_after``: a run stopped after a checkpoint, as by a crash."""


def stop_after(epoch: int):
    """A training callback that interrupts the run once ``epoch`` is recorded."""

    def callback(record):
        if record["epoch"] == epoch:
            raise Interrupt

    return callback
