"""Process-wide settings shared by the stages (kept free of heavy imports)."""

import gc
import os


PROGRESS_DELAY_S = 2  # a progress bar is drawn once its work has taken this long: a load never is


def quiet() -> bool:
    """Progress bars off under CI (they flood logs), on for people."""
    return bool(os.environ.get("CI"))


def progress_only_for_slow_work() -> None:
    """Every tqdm bar of the process (ours, and the ones transformers, datasets and huggingface_hub draw
    for sub-second loads: "Loading weights", "tokenize", "Writing model shards") waits PROGRESS_DELAY_S
    before it is drawn. tqdm reads TQDM_* defaults when it is first imported, so this runs before: when
    iwsft.stages is imported. A TQDM_DELAY already set (TQDM_DELAY=0: every bar) is kept."""
    os.environ.setdefault("TQDM_DELAY", str(PROGRESS_DELAY_S))


def collect_garbage_from_now_on() -> None:
    """The end of a command's imports (see iwsft.cli.main.cli, which turned the collector off for them):
    the millions of objects they made are moved out of the collector's sight for good (gc.freeze: they
    live as long as the process) and collection resumes for the command's own work. Nothing if the
    collector is on (main() called in-process, as tests do)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def machine_description(threads: int, cpuinfo: str | None = None) -> str:
    """"x86_64, Intel(R) Xeon(R) Processor, avx512, torch 2.13.0, threads=1" for the report, without
    importing torch. The vector ISA is there because it changes results: torch's CPU kernels round
    differently with AVX-512 and AVX2, so the demo's pi_ref (trained from scratch) and every number after
    it differ between two such machines at the same seed (measured: README, "Results of the demo")."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    isa = next((name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2")) if flag in flags), None)
    try:
        torch_version = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch_version = None
    parts = [platform.machine(), fields.get("model name") or platform.processor() or "cpu", isa, torch_version]
    return ", ".join(part for part in parts if part) + f", threads={threads}"
