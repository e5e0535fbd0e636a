"""How many threads the embedded model uses: physical cores available to the process, less one.

The machine is described by a /proc and /sys of the test's own making (CPU topology,
cgroup v1 and v2 quotas), so each case is exact whatever machine runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.config import ModelConfig
from loom.generation.backends.embedded import EmbeddedLlama, available_cores, default_threads


def machine(
    root: Path,
    cores: int,
    threads_per_core: int = 1,
    cgroup: str = "0::/",
    files: dict[str, str] | None = None,
) -> set[int]:
    """A fake /sys topology of `cores` cores × `threads_per_core`; returns the CPU ids."""
    cpus = set()
    for core in range(cores):
        for thread in range(threads_per_core):
            cpu = core + thread * cores  # Linux numbers the second hardware threads last
            topology = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
            topology.mkdir(parents=True)
            (topology / "physical_package_id").write_text("0\n")
            (topology / "core_id").write_text(f"{core}\n")
            cpus.add(cpu)
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup + "\n")
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return cpus


def test_hardware_threads_of_one_core_count_once(tmp_path: Path) -> None:
    cpus = machine(tmp_path, cores=4, threads_per_core=2)
    assert available_cores(tmp_path, cpus) == 4
    assert available_cores(tmp_path, {0, 4}) == 1  # both hardware threads of core 0


def test_cpu_affinity_limits_the_cores(tmp_path: Path) -> None:
    machine(tmp_path, cores=8)
    assert available_cores(tmp_path, {2, 3, 5}) == 3


def test_a_cgroup_v2_quota_caps_the_cores(tmp_path: Path) -> None:
    cpus = machine(
        tmp_path,
        cores=8,
        cgroup="0::/box/job",
        files={
            "sys/fs/cgroup/box/cpu.max": "250000 100000\n",  # 2.5 CPUs for the box
            "sys/fs/cgroup/box/job/cpu.max": "max 100000\n",
        },
    )
    assert available_cores(tmp_path, cpus) == 2


def test_a_cgroup_v1_quota_caps_the_cores(tmp_path: Path) -> None:
    cpus = machine(
        tmp_path,
        cores=8,
        cgroup="4:memory:/x\n3:cpu,cpuacct:/docker/abc",
        files={
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert available_cores(tmp_path, cpus) == 3


def test_no_quota_and_no_topology_count_cpus(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("3:cpu,cpuacct:/\n")
    assert available_cores(tmp_path, {0, 1, 2, 3, 4, 5}) == 6


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 2), (8, 7)])
def test_the_default_leaves_one_core_and_uses_at_least_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    cpus = machine(tmp_path, cores=cores, threads_per_core=2)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: cpus)
    assert default_threads(tmp_path) == threads


def test_the_backend_reports_its_threads_and_the_config_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No model is loaded: the thread count is decided when the backend is made."""
    pytest.importorskip("xllamacpp", reason="the [local] extra is not installed")
    from loom.generation.backends import embedded, make_backend

    monkeypatch.setattr(embedded, "default_threads", lambda root="/": 5)
    assert EmbeddedLlama(Path("m.gguf")).threads == 5
    assert EmbeddedLlama(Path("m.gguf"), threads=2).threads == 2
    model = ModelConfig(name="local", provider="embedded", model="m")
    made = make_backend(ModelConfig(**{**model.__dict__, "options": {"model_path": "m.gguf"}}))
    assert isinstance(made, EmbeddedLlama) and made.threads == 5
    made = make_backend(
        ModelConfig(**{**model.__dict__, "options": {"model_path": "m.gguf", "threads": 3}})
    )
    assert isinstance(made, EmbeddedLlama) and made.threads == 3
