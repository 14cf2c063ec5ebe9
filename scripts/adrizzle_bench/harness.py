"""The benchmarks' harness: environment, percentiles, timing, memory, plots and results files.

Every benchmark module (one per ``scripts/bench.py`` sub-command) measures and writes through
this module, so a number means the same thing in every table:

- **Percentiles** (``percentile``): linear interpolation between the closest ranks, numpy's
  default (``method="linear"``, Hyndman & Fan type 7). For ``n`` sorted samples ``x[0..n-1]``
  the ``q``-th percentile (``0 <= q <= 100``) sits at position ``h = (n - 1) * q / 100``:
  ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. At ``q = 50`` this is
  ``statistics.median``, so a "median of 3" and a "p50" agree. adrizzle's status server
  (``adrizzle/driver/metrics.py``) uses nearest-rank instead (``x[ceil(n * q) - 1]``): for the
  same samples the dashboard's p99 can be higher than a table's (with 100 samples or fewer its
  p99 is the maximum).
- **Timing**: ``timed()`` (wall clock and this process's CPU, which is the whole driver) and
  ``completion_gaps`` (ms between consecutive completions, the first from the start, so their
  mean is wall time / micro-batches).
- **Memory**: ``rss_bytes`` (a process and, optionally, its children: a worker and its slots).
- **CPU by process**: ``cpu_seconds`` (a process's threads, ns resolution on Linux).
- **The driver's warnings**: ``driver_warnings`` collects what the ``adrizzle`` logger warns
  (a worker lost, a run with no progress, groups re-run) with the time of each.
- **Environment**: ``machine()`` (the one-line header of every section) and ``environment()``
  (the RESULTS.md preamble).
- **Results**: ``save_section`` writes ``NAME.md`` and reassembles ``RESULTS.md`` from every
  ``NAME.md`` in the directory, in a fixed order (peers first: it is the headline).
- **Plots**: PNGs with matplotlib's Agg backend, skipped (``None``, and a note in the section)
  when matplotlib is missing; it comes with the ``bench`` extra.

Only the standard library is imported at module level: ``peer_engines`` imports this module in
a child process whose interpreter may have neither adrizzle nor psutil nor matplotlib.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ORDER = (
    "peers",
    "hot-path",
    "single-stage",
    "single-stage-py311",
    "shuffle",
    "shuffle-py311",
    "streaming",
    "streaming-10ms",
    "recovery",
    "scaling",
    "scaling-real-32",
    "scaling-simulated",
    "scaling-simulated-128",
    "scaling-hosts",
    "checkpoint-cost",
    "connectors",
    "soak",
    "redesign-ab",
)
LOCAL_PACKAGES = ("adrizzle", "uvloop", "cloudpickle", "matplotlib")
PLOTS_SKIPPED = "(plots skipped: matplotlib is not installed; it comes with the bench extra)"
PERCENTILE_NOTE = (
    "Percentiles (p50, p99) interpolate linearly between the closest ranks (numpy's default); "
    "the p50 is the median."
)


# -- environment --------------------------------------------------------------------------


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


def machine() -> str:
    """One line: host, cores, Python, adrizzle's version, today (each section's header)."""
    return (
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"adrizzle {package_version('adrizzle')} · {datetime.date.today().isoformat()}"
    )


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


# -- statistics ---------------------------------------------------------------------------


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linear between the closest ranks
    (see the module docstring). ``ValueError`` when there are no samples."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def percentile_or_none(samples: Sequence[float], q: float) -> float | None:
    return percentile(samples, q) if samples else None


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """``mean``, ``p50``, ``p99`` and ``n`` of ``samples_ms``."""
    return {
        "mean": statistics.fmean(samples_ms),
        "p50": percentile(samples_ms, 50),
        "p99": percentile(samples_ms, 99),
        "n": len(samples_ms),
    }


# -- timing and memory --------------------------------------------------------------------


@dataclasses.dataclass
class Timed:
    """What ``timed()`` measured, in seconds (filled in when the block ends)."""

    wall: float = 0.0
    cpu: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Timed]:
    """Wall-clock time and this process's CPU time (the driver's) of the ``with`` block."""
    out = Timed()
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out.wall, out.cpu = time.perf_counter() - t0, time.process_time() - cpu0


def completion_gaps(start: float, done_at: Sequence[float]) -> list[float]:
    """ms between consecutive completions (sorted), the first one measured from ``start``."""
    out, last = [], start
    for t in sorted(done_at):
        out.append((t - last) * 1e3)
        last = t
    return out


def rss_bytes(pid: int, children: bool = True) -> int | None:
    """Resident memory of process ``pid`` (plus its descendants: a worker's slots), or None if
    it is gone. Needs psutil (dev and bench extras)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)] if children else [proc]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total
    except psutil.NoSuchProcess:
        return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time of process ``pid`` (all its threads), or None if it is gone. Linux: the
    scheduler's nanosecond run time (``/proc/PID/task/*/schedstat``; ``psutil``'s clock-tick
    times are 10 ms coarse, too coarse for µs per micro-batch); elsewhere psutil's user +
    system time."""
    tasks = Path(f"/proc/{pid}/task")
    if tasks.is_dir():
        total = 0
        try:
            for task in tasks.iterdir():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return total / 1e9
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    return float(t.user + t.system)


def workers_rss_bytes(workers: Iterable[Mapping[str, Any]]) -> int:
    """Resident memory of every worker process with a ``pid`` (``engine.workers``) and its
    slots; workers already gone count 0."""
    return sum(rss_bytes(w["pid"]) or 0 for w in workers if w.get("pid") is not None)


def growth_percent(start: float, end: float) -> float:
    """How much ``end`` grew over ``start``, in percent (negative: it shrank)."""
    if start <= 0:
        raise ValueError(f"start must be > 0, got {start}")
    return (end - start) / start * 100


class _Collect(logging.Handler):
    def __init__(self, into: list[tuple[float, str]]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append((record.created, record.getMessage()))


@contextlib.contextmanager
def driver_warnings(into: list[tuple[float, str]]) -> Iterator[None]:
    """Append ``(epoch seconds, message)`` for each warning of the ``adrizzle`` logger (the
    driver runs in this process) to ``into`` while the block runs."""
    logger = logging.getLogger("adrizzle")
    handler = _Collect(into)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# -- results files ------------------------------------------------------------------------


def default_results_dir() -> Path:
    """``bench-results/`` of the checkout this package sits in (scripts/adrizzle_bench/), or of
    the current directory when it is installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and (root / "scripts").is_dir():
        return root / "bench-results"
    return Path.cwd() / "bench-results"


def results_dir(args: Any) -> Path:
    """``args.results_dir`` (``--results-dir``) if set, else ``default_results_dir()``."""
    return Path(getattr(args, "results_dir", None) or default_results_dir())


def section_text(lines: Sequence[str]) -> str:
    """A sub-command's markdown: the machine line, then its lines."""
    return "\n".join([f"_{machine()}_", "", *lines]) + "\n"


def write_results(directory: Path, current: Mapping[str, str] | None = None) -> Path:
    """(Re)write RESULTS.md from every ``NAME.md`` in ``directory``; ``current`` (name ->
    markdown) replaces or adds sections. Returns RESULTS.md's path."""
    directory.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    for md in sorted(directory.glob("*.md")):
        if md.name != "RESULTS.md":
            sections[md.stem] = md.read_text()
    sections.update(current or {})
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    out = [
        "# adrizzle benchmark results",
        "",
        "Every number below was measured on the machine described here; each ratio compares "
        "rows of one run. Each section's first line says where and when it was measured.",
        "Reproduce with `python scripts/bench.py all` (peers need `pip install -e '.[bench]'` "
        "and, for PySpark, a Java runtime); `python scripts/bench.py soak` runs on its own.",
        PERCENTILE_NOTE,
        "",
        *environment(),
        "",
    ]
    for name in names:
        out += [f"## {name}", "", sections[name].strip(), ""]
    path = directory / "RESULTS.md"
    path.write_text("\n".join(out))
    return path


def save_section(directory: Path, name: str, lines: Sequence[str]) -> str:
    """Write ``NAME.md`` (the machine line and ``lines``), reassemble RESULTS.md; the text."""
    directory.mkdir(parents=True, exist_ok=True)
    text = section_text(lines)
    (directory / f"{name}.md").write_text(text)
    write_results(directory)
    return text


# -- plots --------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_links(paths: Sequence[Path | str], alt: str | None = None) -> list[str]:
    """Markdown image lines for ``paths``, or the "plots skipped" note when there are none."""
    if not paths:
        return [PLOTS_SKIPPED]
    return [f"![{alt or Path(p).stem}]({Path(p).name})" for p in paths]


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
    plt = _pyplot()
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
    return _save(fig, path)


@dataclasses.dataclass
class Series:
    """One line of a ``plot_timeline`` panel: ``y`` over ``x``, ``faint`` (e.g. the raw values
    ``y`` smooths) drawn thin in the same colour, a dot at index ``mark``."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    faint: Sequence[float] | None = None
    mark: int | None = None


@dataclasses.dataclass
class Panel:
    title: str
    series: Sequence[Series]


def _tick_label(value: float, _position: float) -> str:
    """Log-axis labels as plain numbers, on 1, 2 and 5 of each decade only."""
    digit = f"{value:.0e}"[0]
    return f"{value:g}" if digit in "125" else ""


def plot_timeline(
    path: Path,
    panels: Sequence[Panel],
    *,
    xlabel: str,
    ylabel: str,
    event: str | None = None,
) -> Path | None:
    """Stacked panels of series over time on a log y axis; ``event`` labels a dashed red line
    at x = 0 (e.g. a worker killed). None when matplotlib is missing."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), dpi=110)
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, panel in zip(axes, panels, strict=True):
        for s in panel.series:
            (line,) = ax.plot(s.x, s.y, linewidth=1.0, label=s.label)
            if s.faint is not None:
                ax.plot(s.x, s.faint, linewidth=0.5, alpha=0.3, color=line.get_color())
            if s.mark is not None:
                ax.plot([s.x[s.mark]], [s.y[s.mark]], "o", color=line.get_color(), markersize=6)
        if event is not None:
            ax.axvline(0.0, color="red", linestyle="--", linewidth=1, label=event)
        ax.set_yscale("log")
        for axis_ticks in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_ticks(FuncFormatter(_tick_label))
        ax.set_ylabel(ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    axes[-1].set_xlabel(xlabel)
    return _save(fig, path)


@dataclasses.dataclass
class XYPanel:
    """One panel of ``plot_xy_panels``: ``lines`` maps a label ``"COLOUR · STYLE"`` (say
    ``"G=10 · shuffle"``) to its points ``{x: y}``; lines share a colour by the part before
    " · " and a style by the part after (the first style met solid, the next dashed, ...)."""

    title: str
    ylabel: str
    lines: Mapping[str, Mapping[float, float]]


def plot_xy_panels(
    path: Path, panels: Sequence[XYPanel], *, xlabel: str, title: str = "", logx: bool = True
) -> Path | None:
    """Side-by-side panels of y (log) vs x (log unless ``logx=False``): Drizzle's scaling
    figure, time per micro-batch vs workers, one line per group size. None without
    matplotlib."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), dpi=110)
    axes = list(axes) if len(panels) > 1 else [axes]
    colours: dict[str, str] = {}
    styles: dict[str, str] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes, panels, strict=True):
        for label, points in panel.lines.items():
            if not points:
                continue
            colour_key, _sep, style_key = label.partition(" · ")
            colour = colours.setdefault(colour_key, cycle[len(colours) % len(cycle)])
            style = styles.setdefault(style_key, ("-", "--", ":", "-.")[len(styles) % 4])
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], style, marker="o", color=colour, label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_yscale("log")
        xs_all = sorted({x for points in panel.lines.values() for x in points})
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        for axis_ticks in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_ticks(FuncFormatter(_tick_label))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
