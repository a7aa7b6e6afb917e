"""scripts/compose_smoke.sh's first step without Docker: where Compose is missing it installs it as root with
apt-get (the package apt knows), or stops with the one command that does. The script runs with a PATH of
stubs and the few tools it calls, so neither a Docker nor a Compose of this machine is seen, and nothing
is installed: the stub apt-get records its arguments and drops a fake docker-compose."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compose_smoke.sh"
TOOLS = ("bash", "dirname", "mkdir", "grep", "sed", "cat")


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def run_script(tmp_path: Path, uid: int, candidates: tuple[str, ...]) -> tuple[subprocess.CompletedProcess, Path]:
    """The script on a PATH that has no docker and no docker-compose; `id -u` says `uid`; apt-cache has a
    candidate for each package in `candidates`."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt-get.log"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(found)
    stub(bin_dir, "id", f"echo {uid}")
    known = " ".join(candidates)
    stub(bin_dir, "apt-cache", f'for p in {known}; do [ "$2" = "$p" ] && echo "  Candidate: 2.0-1"; done; exit 0')
    fake_compose = bin_dir / "docker-compose"
    stub(bin_dir, "apt-get", f'echo "$@" >> {log}\n'
                             f'printf "#!/bin/sh\\necho docker-compose version 1.29.2\\n" > {fake_compose}\n'
                             f'{shutil.which("chmod")} 755 {fake_compose}')
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "WORK": str(tmp_path / "work")}
    done = subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return done, log


def test_without_root_it_stops_with_the_command_that_installs_compose(tmp_path):
    done, log = run_script(tmp_path, uid=1000, candidates=("docker-compose",))  # Debian: 1.29 on bookworm
    assert done.returncode == 1
    assert "`sudo apt-get install docker-compose`" in done.stderr
    assert "command not found" not in done.stderr + done.stdout
    assert not log.exists()  # nothing installed


def test_the_compose_v2_plugin_is_named_where_apt_has_it(tmp_path):
    done, _ = run_script(tmp_path, uid=1000, candidates=("docker-compose-plugin", "docker-compose"))
    assert done.returncode == 1 and "`sudo apt-get install docker-compose-plugin`" in done.stderr


def test_as_root_it_installs_debians_docker_compose_then_goes_on(tmp_path):
    done, log = run_script(tmp_path, uid=0, candidates=("docker-compose",))
    assert log.read_text().split() == ["install", "-y", "-qq", "--no-install-recommends", "docker-compose"]
    assert "docker-compose version 1.29.2" in done.stdout  # the installed Compose answers ...
    assert done.returncode == 1 and "no Docker engine answers" in done.stderr  # ... and the next check runs
