"""What the benchmarks leave behind: bench-results/RESULTS.md and the PNG plots.

RESULTS.md is the machine, the versions and the date, then every sub-command's table in a fixed
order (peers first: it is the headline). Each sub-command writes its own ``NAME.md``; the ones
that finish a run (``peers``, ``scaling``) reassemble RESULTS.md from them, so it always shows
the latest table of each. Plots use matplotlib's Agg backend and are skipped, with a note,
when matplotlib is not installed (it comes with the ``bench`` extra).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "bench-results"
ORDER = ("peers", "single-stage", "shuffle", "streaming", "streaming-10ms", "recovery", "scaling")
LOCAL_PACKAGES = ("adrizzle", "uvloop", "cloudpickle", "matplotlib")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def java_version() -> str | None:
    java = shutil.which("java")
    if java is None:
        return None
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stderr or out.stdout).splitlines()
    return first[0].strip() if first else None


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[str]:
    """Markdown lines: machine, OS, Python, package versions, date (peers' versions are in
    the peers section, since they may run under another interpreter)."""
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    versions = {name: package_version(name) for name in LOCAL_PACKAGES}
    return [
        f"- machine: {cpu_model()}, {os.cpu_count()} cores{mem}; "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
    ]


def write_results(results_dir: Path, current: Mapping[str, str]) -> Path:
    """(Re)write RESULTS.md from ``current`` (name -> markdown) and the other NAME.md files."""
    results_dir.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    for md in sorted(results_dir.glob("*.md")):
        if md.name != "RESULTS.md":
            sections[md.stem] = md.read_text()
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    sections.update({name: f"_measured {now}_\n\n{text}" for name, text in current.items()})
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    out = [
        "# adrizzle benchmark results",
        "",
        "Every number below was measured on the machine described here; each ratio compares "
        "rows of one run. Sections from earlier runs keep the date they were measured.",
        "Reproduce with `python scripts/bench.py all` (peers need `pip install -e '.[bench]'` "
        "and, for PySpark, a Java runtime).",
        "",
        *environment(),
        "",
    ]
    for name in names:
        out += [f"## {name}", "", sections[name].strip(), ""]
    path = results_dir / "RESULTS.md"
    path.write_text("\n".join(out))
    return path


def save_section(results_dir: Path, name: str, text: str) -> Path:
    """Write ``NAME.md`` and reassemble RESULTS.md with it; the RESULTS.md path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.md").write_text(text)
    return write_results(results_dir, {name: text})


# -- plots --------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_vs_group_size(
    path: Path,
    title: str,
    lines: Mapping[str, Mapping[int, float]],
    horizontal: Sequence[tuple[str, str, float]] = (),
    ylabel: str = "ms per micro-batch (mean)",
) -> Path | None:
    """Log-log plot of y vs group size, one line per series; each ``(engine, mode, y)`` in
    ``horizontal`` is a flat line (a peer does not group micro-batches), one colour per engine,
    one line style per mode. None when matplotlib is missing."""
    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for label, points in lines.items():
        if not points:
            continue
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
    palette = ["tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"]
    engines = list(dict.fromkeys(engine for engine, _mode, _y in horizontal))
    modes = list(dict.fromkeys(mode for _engine, mode, _y in horizontal))
    for engine, mode, y in horizontal:
        color = palette[engines.index(engine) % len(palette)]
        second = modes.index(mode) % 2 == 1
        ax.axhline(y, linestyle="--" if second else ":", color=color, linewidth=1.4)
        ax.annotate(
            f"{engine} {mode}: {y:.3g} ms",
            xy=(0.0 if second else 1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(4 if second else -4, 2),
            textcoords="offset points",
            ha="left" if second else "right",
            va="bottom",
            fontsize=7,
            color=color,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("group size G (micro-batches per group)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
