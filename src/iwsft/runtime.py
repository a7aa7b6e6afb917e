"""Process-wide settings shared by the stages (kept free of heavy imports)."""

import os


def quiet() -> bool:
    """Progress bars off under CI (they flood logs), on for people."""
    return bool(os.environ.get("CI"))


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
