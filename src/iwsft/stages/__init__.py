"""One module per DVC stage; each `run(params, ...)` reads its params section and writes its outputs.

dvc.yaml calls them through the CLI (`iwsft <stage>`), which is the only place that reads
params.yaml, sets threads and turns user errors into clear messages.
"""

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
REPORTS = Path("reports")


def model_dir(method: str, params: dict) -> Path:
    """Where each method's model lives; `base` is pi_ref itself."""
    return Path(params["model"]["base"]) if method == "base" else MODELS / method
