import os
import sys
from pathlib import Path

# Offline and quiet everywhere: nothing in the tests may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _environment_restored():
    """What one test puts in os.environ must not reach the next test's subprocesses: a library called
    in-process may set variables (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI), and a DAG
    started afterwards would then log to that test's store instead of its project's own."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True, scope="module")
def _environment_restored_after_the_module():
    """The same for a module's own fixtures, which run before the per-test snapshot above: a module fixture
    that logs a model (mlflow.set_tracking_uri) would otherwise point every later module of its worker, and
    the DAGs they start, at its store (the control pipeline once registered into test_champion_serving's)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def pytest_collection_modifyitems(items):
    """Order the files for `make test`'s two workers (pytest-xdist --dist loadfile hands out whole files
    in this order, two to each worker at the start): the first file that needs the micro DAG (its worker
    builds the DAG, ~6 min), then the files that do not need it, heaviest first (the other worker runs
    them meanwhile), then the other users of the micro DAG, heaviest first, once it is built.
    A serial run (TEST_WORKERS=0) keeps this order too."""
    def file_of(item):
        return item.nodeid.split("::")[0]

    def weight(name):  # a file's place in HEAVIEST_FIRST; files not listed after, in collection order
        name = Path(name).name
        return HEAVIEST_FIRST.index(name) if name in HEAVIEST_FIRST else len(HEAVIEST_FIRST)

    micro = list(dict.fromkeys(file_of(item) for item in items if "micro_project" in item.fixturenames))
    items.sort(key=lambda item: (0, 0) if micro and file_of(item) == micro[0]
               else (1 + (file_of(item) in micro), weight(file_of(item))))  # stable within a file


# measured seconds per file beside the micro DAG's own ~400 s (serial run, 2 cores)
HEAVIEST_FIRST = ("test_study.py", "test_smollm2_pipeline.py", "test_hub_sources.py", "test_champion_serving.py",
                  "test_control_pipeline.py", "test_prefect.py", "test_teacher_pipeline.py", "test_mlflow_samples.py",
                  "test_train_stage.py", "test_bad_inputs.py", "test_mlflow.py", "test_flows.py", "test_pipeline.py",
                  "test_smollm2.py", "test_ddp.py", "test_sharding_processes.py")
