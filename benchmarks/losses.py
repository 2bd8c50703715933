"""Forward+backward time and peak extra memory of contrastive losses: ours, peers, the floor.

    python -m benchmarks.losses              # full grid, writes docs/benchmarks.md (+ .json)
    python -m benchmarks.losses --quick      # smoke test, writes runs/bench-quick.md
    contrastkit bench [same options]         # the same, from a source checkout

Every configuration (loss family, implementation, B, D) runs in a fresh subprocess with
``torch.set_num_threads(2)``: raw ``(B, D)`` float32 leaves, one warm-up call, then the median
of a few calls (fewer when a call is slow; none past 30 s, the warm-up is then the time).
One call is forward + backward to the inputs' gradients. Peak extra memory is ``VmHWM`` after
resetting it (``/proc/self/clear_refs`` = 5) just before the warm-up, minus ``VmRSS`` there.

Configurations projected (from the same implementation at the largest smaller B measured:
time ~ B^2, memory ~ B^2, or ~ B for the tiled engine) past ``--max-seconds`` per call or
``--max-gib`` are skipped and listed with the projection. The matmul floor is ``torch.mm``
alone on the loss's shapes; where its N x N matrix would not fit it is projected (~ B^2).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.impls import FAMILIES, IMPLS, PeerUnavailable, get_impl, peer_versions

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "BENCH-RESULT "
MIB = 2**20
GIB = 2**30

FULL_BATCHES = {"ntxent": [1024, 4096, 16384, 65536], "clip": [1024, 4096, 8192, 16384, 65536]}
FULL_DIMS = [128, 768]
QUICK_BATCHES = [1024, 2048]
QUICK_DIMS = [128]
# Every implementation first runs at these B: they seed the projections that decide whether
# the larger configurations fit (pytorch-metric-learning needs ~2 GiB at 256, ~B^3 above).
PROBES = (128, 256)
PROBE_B = PROBES[-1]  # the loss-agreement table reads this one

# The targets: (id, family, B, D, metric, threshold, text).
TARGETS = [
    ("T1", "ntxent", 16384, 128, "x_floor", 1.3, "NT-Xent within 1.3x of the matmul floor"),
    ("T2", "ntxent", 16384, 768, "x_floor", 1.15, "NT-Xent within 1.15x of the matmul floor"),
    ("T3", "clip", 8192, 128, "x_floor", 1.6, "CLIP within 1.6x of the matmul floor"),
    ("T4", "ntxent", 65536, 128, "peak_mib", 1024.0, "NT-Xent peak extra memory under 1 GiB"),
]


# ---------------------------------------------------------------------------- measuring


def _proc_status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def calls_after_warmup(warmup_s: float, max_calls: int) -> int:
    """How many timed calls follow the warm-up: fewer for slow calls, none past 30 s."""
    if warmup_s < 1.0:
        return max_calls
    if warmup_s < 10.0:
        return min(3, max_calls)
    if warmup_s < 30.0:
        return min(1, max_calls)
    return 0


def floor_flops(family: str, B: int, D: int) -> float:
    n = 2 * B if family == "ntxent" else B
    return 3 * 2.0 * n * n * D  # (NxD)(DxN), (NxN)(NxD), (DxN)(NxN)


def measure(
    family: str,
    impl: str,
    B: int,
    D: int,
    *,
    tile: int = 1024,
    max_calls: int = 5,
    seed: int = 0,
) -> dict:
    """Time one configuration in this process; returns the record the report reads.

    ``impl="floor"`` times the three ``torch.mm`` of the loss's shapes (out= buffers, so its
    only big allocation is one N x N matrix, made before the peak is reset).
    """
    n_rows = 2 * B if family == "ntxent" else B
    record = {"family": family, "impl": impl, "B": B, "D": D, "N": n_rows, "tile": tile}
    gen = torch.Generator().manual_seed(seed)
    if impl == "floor":
        a = torch.randn(n_rows, D, generator=gen)
        bt = torch.randn(D, n_rows, generator=gen)
        s = torch.empty(n_rows, n_rows)
        g1, g2 = torch.empty(n_rows, D), torch.empty(D, n_rows)

        def call() -> float:
            t0 = time.perf_counter()
            torch.mm(a, bt, out=s)  # forward
            torch.mm(s, a, out=g1)  # backward, both operands
            torch.mm(bt, s, out=g2)
            return time.perf_counter() - t0

        loss = None
    else:
        fn = get_impl(family, impl).build(tile)
        x = torch.randn(B, D, generator=gen).requires_grad_()
        y = torch.randn(B, D, generator=gen).requires_grad_()
        box = {}

        def call() -> float:
            x.grad = y.grad = None
            t0 = time.perf_counter()
            out = fn(x, y)
            out.backward()
            elapsed = time.perf_counter() - t0
            box["loss"] = float(out.detach())
            return elapsed

    gc.collect()
    rss_before = _proc_status_kib("VmRSS")
    peak_ok = reset_peak_rss()
    warmup = call()
    n = calls_after_warmup(warmup, max_calls)
    times = [call() for _ in range(n)]
    peak = _proc_status_kib("VmHWM") if peak_ok else None
    if impl != "floor":
        loss = box["loss"]
    seconds = statistics.median(times) if times else warmup
    record.update(
        status="ok",
        time_ms=1e3 * seconds,
        warmup_ms=1e3 * warmup,
        times_ms=[1e3 * t for t in times],
        n=n,
        peak_mib=None if peak is None or rss_before is None else (peak - rss_before) / 1024,
        rss_before_mib=None if rss_before is None else rss_before / 1024,
        loss=loss,
    )
    if impl == "floor":
        record["nn_mib"] = n_rows * n_rows * 4 / MIB
        record["gflops"] = floor_flops(family, B, D) / seconds / 1e9
    return record


def _worker(spec: dict) -> None:
    torch.set_num_threads(spec.pop("threads"))
    try:
        record = measure(**spec)
    except PeerUnavailable as e:
        record = {**spec, "status": "unavailable", "reason": str(e)}
    record["threads"] = torch.get_num_threads()
    print(RESULT_MARK + json.dumps(record), flush=True)


def run_in_subprocess(spec: dict, *, timeout_s: float, rss_guard_gib: float) -> dict:
    """Run ``measure(**spec)`` in a fresh interpreter; kill it past the time or RSS guard."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.losses", "--worker", json.dumps(spec)]
    base = {k: spec[k] for k in ("family", "impl", "B", "D")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        killed = None
        max_rss = 0
        while proc.poll() is None:
            rss = _proc_status_kib("VmRSS", proc.pid) or 0
            max_rss = max(max_rss, rss)
            if rss > rss_guard_gib * GIB / 1024:
                killed = f"killed: its RSS passed the {rss_guard_gib:g} GiB guard"
            elif time.perf_counter() - t0 > timeout_s:
                killed = f"killed: still running after {timeout_s:.0f} s"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return {**json.loads(line[len(RESULT_MARK) :]), "wall_s": wall}
    tail = stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return {**base, "status": "failed", "reason": killed or tail[0], "wall_s": wall}


# ---------------------------------------------------------------------------- the grid


def projection(done: list[dict], B: int, tiled: bool) -> dict:
    """Time and peak memory at ``B`` projected from the largest B measured (``done[-1]``).

    Exponents: time ~ B^2 and memory ~ B^2 (~ B for the tiled engine), or the exponent
    fitted on the two largest B measured when it is steeper (pytorch-metric-learning's
    memory grows as B^3), so the projection errs towards skipping.
    """
    ref = done[-1]
    k_mem_default = 1.0 if tiled else 2.0
    k_time = max(2.0, _fit_exponent(done, "time_ms") or 2.0)
    k_mem = max(k_mem_default, _fit_exponent(done, "peak_mib") or k_mem_default)
    scale = B / ref["B"]
    return {
        "time_s": ref["time_ms"] * scale**k_time / 1e3,
        "peak_mib": max(ref.get("peak_mib") or 0.0, 0.0) * scale**k_mem,
        "basis": f"from B={ref['B']}, time ~B^{k_time:.1f}, memory ~B^{k_mem:.1f}",
    }


def _is_target(family: str, impl: str, B: int, D: int) -> bool:
    if not impl.startswith("ours"):
        return False
    return any(t[1] == family and t[2] == B and t[3] == D for t in TARGETS)


def plan_and_run(args, log, runner=None) -> list[dict]:
    """Run the grid, skipping by projection; returns every record (measured or not).

    ``runner(spec, timeout_s=, rss_guard_gib=)`` runs one configuration (default: a fresh
    subprocess, ``run_in_subprocess``).
    """
    runner = runner or run_in_subprocess
    records: list[dict] = []
    spec_common = {"tile": args.tile, "max_calls": args.max_calls, "seed": args.seed}
    guard = args.max_gib + 1.5  # total RSS: the limit plus inputs, imports, interpreter
    todo = [
        (family, D, impl)
        for family in args.families
        for D in args.dims
        for impl in ["floor", *[i.name for i in IMPLS[family] if i.name in args.impls]]
    ]
    started = time.perf_counter()
    for index, (family, D, impl) in enumerate(todo, 1):
        tiled = impl != "floor" and get_impl(family, impl).tiled
        done: list[dict] = []  # measured records of this (family, D, impl), ascending B
        stop_reason = None
        for B in args.batches[family]:
            rec = {"family": family, "impl": impl, "B": B, "D": D}
            rec["N"] = 2 * B if family == "ntxent" else B
            ref = done[-1] if done else None
            max_calls = args.max_calls
            if impl == "floor":
                nn_gib = rec["N"] ** 2 * 4 / GIB
                proj_t = ref["time_ms"] * (B / ref["B"]) ** 2 / 1e3 if ref else None  # N^2 D flops
                too_big = nn_gib > args.max_gib / 2
                too_slow = proj_t is not None and proj_t > args.max_seconds
                if ref and (too_big or too_slow):
                    why = f"one N x N matrix is {nn_gib:.0f} GiB" if too_big else "too slow"
                    rec.update(
                        status="projected",
                        time_ms=1e3 * proj_t,
                        nn_mib=nn_gib * 1024,
                        reason=f"projected ~B^2 from B={ref['B']} ({why})",
                    )
                    records.append(rec)
                    continue
            else:
                if stop_reason:
                    records.append({**rec, "status": "skipped", "reason": stop_reason})
                    continue
                if ref:
                    proj = projection(done, B, tiled)
                    proj_t, proj_m, basis = proj["time_s"], proj["peak_mib"], proj["basis"]
                    rec.update(projected_time_ms=1e3 * proj_t, projected_peak_mib=proj_m)
                    if proj_m > args.max_gib * 1024:
                        reason = (
                            f"projected {proj_m / 1024:.0f} GiB > {args.max_gib:g} GiB ({basis})"
                        )
                        records.append({**rec, "status": "skipped", "reason": reason})
                        continue
                    available = _mem_available_mib()
                    if available is not None and proj_m > available - 1024:
                        reason = (
                            f"projected {proj_m / 1024:.1f} GiB but only {available / 1024:.1f} "
                            f"GiB of memory is available now ({basis})"
                        )
                        records.append({**rec, "status": "skipped", "reason": reason})
                        continue
                    if proj_t > args.max_seconds:
                        if not (args.target_runs and _is_target(family, impl, B, D)):
                            reason = (
                                f"projected {proj_t:.0f} s per call > {args.max_seconds:g} s "
                                f"({basis})"
                            )
                            records.append({**rec, "status": "skipped", "reason": reason})
                            continue
                        max_calls = 0
                        rec["note"] = (
                            f"run once for target {_target_ids(family, B, D)} although "
                            f"projected {proj_t:.0f} s per call"
                        )
            spec = {"family": family, "impl": impl, "B": B, "D": D, **spec_common}
            spec.update(max_calls=max_calls, threads=args.threads)
            log(f"[{index}/{len(todo)}] {family} {impl} B={B} D={D} ...", end="")
            rec["load_before"] = _load_average()
            result = runner(spec, timeout_s=args.timeout, rss_guard_gib=guard)
            rec.update(result)
            records.append(rec)
            elapsed = time.perf_counter() - started
            log(" " + _describe(rec) + f"  [{rec['wall_s']:.0f} s; total {elapsed / 60:.1f} min]")
            if rec["status"] == "ok":
                done.append(rec)
            elif rec["status"] == "unavailable":
                stop_reason = rec["reason"]
            else:
                stop_reason = f"not run: B={B} failed ({rec['reason']})"
    return records


def _mem_available_mib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s*(\d+)", text, re.M)
    return int(found.group(1)) / 1024 if found else None


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _target_ids(family: str, B: int, D: int) -> str:
    return "/".join(t[0] for t in TARGETS if t[1:4] == (family, B, D))


def _describe(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"{rec['status']}: {rec.get('reason', '')}"
    peak = rec.get("peak_mib")
    mem = "" if peak is None else f", {peak:.0f} MiB"
    return f"{rec['time_ms']:.1f} ms (n={rec['n']}){mem}"


# ---------------------------------------------------------------------------- machine


def machine_info(threads: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version()}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flag_set = set(flags.group(1).split()) if flags else set()
    simd = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    info["cpu"] = model.group(1).strip() if model else platform.processor() or "unknown"
    info["logical_cpus"] = os.cpu_count()
    info["simd"] = " ".join(f for f in simd if f in flag_set) or "n/a"
    info["virtual"] = "hypervisor" in flag_set
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.M)
    info["memory_gib"] = int(total.group(1)) / 2**20 if total else None
    info["torch"] = torch.__version__
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    info["blas"] = blas.group(1) if blas else "unknown"
    info["threads"] = threads
    info["peers"] = peer_versions()
    try:
        from importlib import metadata

        info["contrastkit"] = metadata.version("contrastkit")
    except Exception:
        info["contrastkit"] = "unknown"
    info["git"] = _git_revision()
    info["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not head:
        return "unknown"
    return head + (" with uncommitted changes" if dirty else "")


# ---------------------------------------------------------------------------- report


def _ms(t: float) -> str:
    if t < 10:
        return f"{t:.2f}"
    if t < 100:
        return f"{t:.1f}"
    return f"{t:.0f}"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def _index(records: list[dict]) -> dict:
    return {(r["family"], r["impl"], r["B"], r["D"]): r for r in records}


def best_peer(records: list[dict], family: str, B: int, D: int) -> dict | None:
    """The fastest third-party library measured at this configuration."""
    peers = {i.name for i in IMPLS[family] if i.kind == "peer"}
    ran = [
        r
        for r in records
        if r["family"] == family
        and r["B"] == B
        and r["D"] == D
        and r["impl"] in peers
        and r["status"] == "ok"
    ]
    return min(ran, key=lambda r: r["time_ms"]) if ran else None


def ratio_to_floor(records: list[dict], rec: dict) -> tuple[float, bool] | None:
    """(time / floor time, whether the floor is projected) or None."""
    floor = _index(records).get((rec["family"], "floor", rec["B"], rec["D"]))
    if floor is None or rec.get("status") != "ok" or "time_ms" not in floor:
        return None
    return rec["time_ms"] / floor["time_ms"], floor["status"] != "ok"


COLUMNS = ["B", "impl", "time (ms)", "n", "x floor", "x best peer", "peak extra (MiB)", "note"]


def family_table(records: list[dict], family: str, D: int) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    order = ["floor", *[i.name for i in IMPLS[family]]]
    batches = sorted({r["B"] for r in records if r["family"] == family and r["D"] == D})
    index = _index(records)
    for B in batches:
        peer = best_peer(records, family, B, D)
        for impl in order:
            rec = index.get((family, impl, B, D))
            if rec is None:
                continue
            lines.append("| " + " | ".join(_row(records, rec, peer)) + " |")
    return lines


def _row(records: list[dict], rec: dict, peer: dict | None) -> list[str]:
    B, impl, status = str(rec["B"]), f"`{rec['impl']}`", rec["status"]
    if rec["impl"] == "floor":
        mem = f"({rec['nn_mib']:.0f}: one N x N)"
        if status == "projected":
            return [B, impl, f"~{_ms(rec['time_ms'])}", "-", "1.00x", "", mem, rec["reason"]]
        if status != "ok":
            return [B, impl, "failed", "-", "", "", "", rec.get("reason", "")]
        note = f"{rec['gflops']:.0f} GFLOP/s"
        if peer:
            note += f"; best peer: {peer['impl']} {_ms(peer['time_ms'])} ms"
        else:
            note += "; no peer ran here"
        return [B, impl, _ms(rec["time_ms"]), str(rec["n"]), "1.00x", "", mem, note]
    if status != "ok":
        return [B, impl, status, "-", "", "", "", rec.get("reason", "")]
    floor = ratio_to_floor(records, rec)
    x_floor = "" if floor is None else ("~" if floor[1] else "") + _ratio(floor[0])
    x_peer = "" if peer is None else _ratio(rec["time_ms"] / peer["time_ms"])
    peak = "n/a" if rec.get("peak_mib") is None else f"{rec['peak_mib']:.0f}"
    note = rec.get("note", "")
    if floor is not None and floor[1]:
        note = "; ".join(filter(None, [note, "floor projected"]))
    return [B, impl, _ms(rec["time_ms"]), str(rec["n"]), x_floor, x_peer, peak, note]


def _fit_exponent(points: list[dict], key: str) -> float | None:
    """Exponent k of key ~ B^k from the two largest B (clamped to [1, 3])."""
    pts = [p for p in points if p.get(key) and p[key] > 0]
    if len(pts) < 2:
        return None
    a, b = pts[-2], pts[-1]
    k = math.log(b[key] / a[key]) / math.log(b["B"] / a["B"])
    return min(3.0, max(1.0, k))


def largest_b_rows(records: list[dict], max_gib: float, max_seconds: float) -> list[list[str]]:
    rows = []
    for family in FAMILIES:
        for D in sorted({r["D"] for r in records if r["family"] == family}):
            for impl in IMPLS[family]:
                pts = sorted(
                    (
                        r
                        for r in records
                        if (r["family"], r["impl"], r["D"]) == (family, impl.name, D)
                        and r["status"] == "ok"
                    ),
                    key=lambda r: r["B"],
                )
                if not pts:
                    continue
                rows.append(_largest_b_row(family, impl, D, pts, max_gib, max_seconds))
    return rows


def _sig(x: float) -> str:
    return f"{int(float(f'{x:.3g}')):,}" if x >= 1000 else f"{x:.0f}"


def _largest_b_row(family, impl, D, pts, max_gib, max_seconds) -> list[str]:
    fits = [p for p in pts if p.get("peak_mib") is not None and p["peak_mib"] <= max_gib * 1024]
    if fits:
        best = fits[-1]
        measured = f"{best['B']} ({best['peak_mib']:.0f} MiB, {best['time_ms'] / 1e3:.1f} s)"
    else:
        measured = "none"
    ref = pts[-1]
    k_default = 1.0 if impl.tiled else 2.0
    k_fit = _fit_exponent(pts, "peak_mib")
    k = max(k_default, k_fit) if k_fit is not None else k_default
    k_text = f"{k:.2f}" + ("" if k_fit is not None else " (assumed)")
    k_time = max(2.0, _fit_exponent(pts, "time_ms") or 2.0)
    mem_b = ref["B"] * (max_gib * 1024 / max(ref["peak_mib"] or 1.0, 1.0)) ** (1 / k)
    time_b = ref["B"] * (max_seconds * 1e3 / ref["time_ms"]) ** (1 / k_time)
    binding = "memory" if mem_b <= time_b else f"time, {max_seconds:g} s per call"
    return [
        family,
        f"`{impl.name}`",
        str(D),
        measured,
        k_text,
        f"~{_sig(mem_b)}",
        f"~{_sig(time_b)}",
        f"~{_sig(min(mem_b, time_b))} ({binding})",
    ]


def evaluate_targets(records: list[dict]) -> list[dict]:
    """Rule-based verdicts for the issue's targets, for our plain and tiled paths."""
    out = []
    index = _index(records)
    for tid, family, B, D, metric, threshold, text in TARGETS:
        for impl in ("ours-tiled", "ours-plain"):
            rec = index.get((family, impl, B, D))
            row = {"id": tid, "text": text, "family": family, "B": B, "D": D, "impl": impl}
            row["threshold"] = threshold
            row["metric"] = metric
            if rec is None:
                row.update(verdict="not measured", value=None, why="not in this run's grid")
            elif rec["status"] != "ok":
                row.update(verdict="not measured", value=None, why=rec.get("reason", ""))
            elif metric == "x_floor":
                ratio = ratio_to_floor(records, rec)
                if ratio is None:
                    row.update(verdict="not measured", value=None, why="no floor")
                else:
                    met = ratio[0] <= threshold
                    row.update(verdict="met" if met else "not met", value=ratio[0])
                    row["why"] = "floor projected" if ratio[1] else ""
            else:
                peak = rec.get("peak_mib")
                if peak is None:
                    row.update(verdict="not measured", value=None, why="no VmHWM on this OS")
                else:
                    met = peak < threshold
                    row.update(verdict="met" if met else "not met", value=peak, why="")
            out.append(row)
    return out


def _target_value(row: dict) -> str:
    if row["value"] is None:
        return "-"
    if row["metric"] == "x_floor":
        return f"{row['value']:.2f}x (limit {row['threshold']:g}x)"
    return f"{row['value']:.0f} MiB (limit {row['threshold']:.0f} MiB)"


def render_markdown(payload: dict) -> str:
    records, meta, info = payload["records"], payload["meta"], payload["machine"]
    out = ["# Benchmarks: contrastive losses on CPU", ""]
    out += [
        "Written by `benchmarks/losses.py`; do not edit by hand. Regenerate with the command",
        "below. Times are one forward + backward to the inputs' gradients.",
        "",
        "## Command",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Run on {info['date']}, took {meta['duration_s'] / 60:.1f} min; "
        f"contrastkit {info['contrastkit']} at git {info['git']}.",
        f"- 1-minute load average: {meta['load_before']:.2f} before the run, highest seen "
        f"before a configuration {meta['load_max']:.2f} (other processes on these "
        f"{info['logical_cpus']} CPUs slow the timings down).",
        f"- Grid: {_grid_text(meta)}; D in {meta['dims']}; tile T={meta['tile']} for "
        f"`ours-tiled`. Every implementation first runs at B in {list(PROBES)} (probes that "
        "seed the projections; shown in the tables).",
        f"- Skip rule: projected past {meta['max_seconds']:g} s per call or "
        f"{meta['max_gib']:g} GiB peak extra memory, from the same implementation at the "
        "largest smaller B measured (time ~ B^2; memory ~ B^2, ~ B for `ours-tiled`; or the "
        "exponent fitted on the two largest B measured where steeper)."
        + (
            " The configurations the targets name are run once for our implementations "
            "even when projected past the time limit."
            if meta.get("target_runs")
            else ""
        ),
        "",
        "## Machine and software",
        "",
        f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, SIMD: {info['simd']}"
        + ("; virtual machine" if info.get("virtual") else "")
        + (f"; memory {info['memory_gib']:.1f} GiB" if info.get("memory_gib") else ""),
        f"- {info['platform']}; Python {info['python']}; torch {info['torch']} "
        f"(BLAS {info['blas']}), torch.set_num_threads({info['threads']})",
        "- Peers: " + ", ".join(f"{k} {v}" for k, v in info["peers"].items()),
        "",
        "## How it is measured",
        "",
        "- Inputs: two raw `B x D` float32 leaf tensors (normalization is inside every "
        "implementation), cosine similarity, temperature 0.1. Each configuration runs in a "
        "fresh subprocess.",
        "- Time: median of n calls after one warm-up call; n = "
        f"{meta['max_calls']} below 1 s per call, 3 below 10 s, 1 below 30 s, 0 above (the "
        "warm-up is then the time).",
        "- Peak extra (MiB): `VmHWM` after resetting it (`/proc/self/clear_refs` = 5) just "
        "before the warm-up, minus `VmRSS` there: the memory the loss and its gradients "
        "need beyond inputs and imports.",
        "- Floor: `torch.mm` alone on the loss's shapes, `(N x D)(D x N)` forward and "
        "`(N x N)(N x D)`, `(D x N)(N x N)` backward, N = 2B for NT-Xent and B for CLIP "
        "(into preallocated outputs). Its memory column is one N x N fp32 matrix, for "
        "reference. `~` marks values projected ~B^2 from the largest B timed.",
        "- x floor = time / floor time; x best peer = time / the fastest third-party library "
        "measured at that configuration (`ref` is not a peer).",
        "",
        "Implementations:",
        "",
    ]
    for family in FAMILIES:
        for impl in IMPLS[family]:
            out.append(f"- {family} `{impl.name}` ({impl.kind}): {impl.description}")
    out.append("")
    titles = {"ntxent": "NT-Xent, two views (2B x 2B)", "clip": "CLIP, two towers (B x B)"}
    for family in FAMILIES:
        for D in sorted({r["D"] for r in records if r["family"] == family}):
            out += [f"## {titles[family]}, D = {D}", ""]
            out += family_table(records, family, D)
            out.append("")
    out += [
        f"## Largest B within {meta['max_gib']:g} GiB of extra memory",
        "",
        "Measured: the largest B run whose peak extra memory stayed within the limit. "
        f"Projected: from the largest B measured, memory ~ B^k (k fitted on the two largest "
        f"B measured, clamped to [1, 3], at least 2, or 1 for `ours-tiled`) and time ~ B^2 "
        f"(or steeper, fitted) against {meta['max_seconds']:g} s "
        "per call; `~` marks projections.",
        "",
        "| family | impl | D | largest B measured (peak, time) | memory exponent k | "
        f"projected B at {meta['max_gib']:g} GiB | projected B at {meta['max_seconds']:g} s "
        "| projected largest B (binding) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in largest_b_rows(records, meta["max_gib"], meta["max_seconds"]):
        out.append("| " + " | ".join(row) + " |")
    out += ["", "## Loss values at the probe B (same inputs)", ""]
    out += _agreement_lines(records)
    out += ["", "## Targets (issue 3)", ""]
    out += _targets_lines(records)
    skipped = [r for r in records if r["status"] not in ("ok", "projected")]
    out += ["", "## Not run", ""]
    if not skipped:
        out.append("Every configuration of the grid ran.")
    for r in skipped:
        out.append(
            f"- {r['family']} `{r['impl']}` B={r['B']} D={r['D']}: {r['status']}: "
            f"{r.get('reason', '')}"
        )
    projected = [r for r in records if r["status"] == "projected"]
    for r in projected:
        out.append(f"- {r['family']} floor B={r['B']} D={r['D']}: {r['reason']}")
    return "\n".join(out) + "\n"


def _grid_text(meta: dict) -> str:
    return "; ".join(f"{fam} B in {meta['batches'][fam]}" for fam in meta["families"])


def _agreement_lines(records: list[dict]) -> list[str]:
    lines = ["| family | D | impl | loss | ref loss | abs diff |", "|---|---|---|---|---|---|"]
    index = _index(records)
    for family in FAMILIES:
        for D in sorted({r["D"] for r in records if r["family"] == family}):
            ref = index.get((family, "ref", PROBE_B, D))
            for impl in IMPLS[family]:
                rec = index.get((family, impl.name, PROBE_B, D))
                if rec is None or rec["status"] != "ok" or rec.get("loss") is None:
                    continue
                ref_loss = ref["loss"] if ref and ref["status"] == "ok" else None
                diff = "" if ref_loss is None else f"{abs(rec['loss'] - ref_loss):.1e}"
                ref_text = "" if ref_loss is None else f"{ref_loss:.6f}"
                lines.append(
                    f"| {family} | {D} | `{impl.name}` | {rec['loss']:.6f} | {ref_text} | {diff} |"
                )
    lines += [
        "",
        "float32 values. `info-nce` on NT-Xent differs by design: info_nce cannot mask the "
        "self-similarity, so each anchor's own vector is one of its negatives (it is the "
        "closest NT-Xent info_nce can express and does the same matmuls).",
    ]
    return lines


def _targets_lines(records: list[dict]) -> list[str]:
    rows = evaluate_targets(records)
    lines = [
        "Verdicts are computed from the tables above (`met` when the measured value is "
        "within the limit); `ours-tiled` is the path the targets are about, `ours-plain` "
        "is shown for reference.",
        "",
        "| target | configuration | impl | measured | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        config = f"{r['family']} B={r['B']} D={r['D']}"
        verdict = r["verdict"] + (f": {r['why']}" if r.get("why") else "")
        lines.append(
            f"| {r['id']}: {r['text']} | {config} | `{r['impl']}` | {_target_value(r)} "
            f"| {verdict} |"
        )
    lines += ["", "Summary:", ""]
    for tid, _family, _B, _D, _metric, _threshold, text in TARGETS:
        tiled = next(r for r in rows if r["id"] == tid and r["impl"] == "ours-tiled")
        plain = next(r for r in rows if r["id"] == tid and r["impl"] == "ours-plain")
        line = f"- {tid} ({text}, {tiled['family']} B={tiled['B']} D={tiled['D']}): "
        line += f"**{tiled['verdict']}** by `ours-tiled`"
        if tiled["value"] is not None:
            line += f": {_target_value(tiled)}"
        elif tiled.get("why"):
            line += f": {tiled['why']}"
        if plain["value"] is not None:
            line += f"; `ours-plain`: {plain['verdict']}, {_target_value(plain)}"
        lines.append(line + ".")
    met = sum(r["verdict"] == "met" for r in rows if r["impl"] == "ours-tiled")
    measured = sum(r["verdict"] != "not measured" for r in rows if r["impl"] == "ours-tiled")
    lines += [
        "",
        f"`ours-tiled` meets {met} of the {measured} targets measured "
        f"({len(TARGETS)} in the issue).",
    ]
    return lines


# ---------------------------------------------------------------------------- command line


def _int_list(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints") from e


def _name_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m benchmarks.losses",
        description="Time contrastive losses (ours, peers, plain PyTorch, matmul floor) and "
        "write a markdown report.",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: B in 1024,2048, D=128")
    p.add_argument("--tile", type=int, default=1024, help="tile_size of ours-tiled [1024]")
    p.add_argument("--batch-sizes", type=_int_list, help="B values for every family")
    p.add_argument("--dims", type=_int_list, help="D values [128,768; quick: 128]")
    p.add_argument("--families", type=_name_list, default=list(FAMILIES))
    p.add_argument(
        "--impls", type=_name_list, help="implementations to time (the floor always runs)"
    )
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip past this per call")
    p.add_argument("--max-gib", type=float, default=16.0, help="skip past this peak extra")
    p.add_argument("--max-calls", type=int, default=5, help="timed calls after the warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads [2]")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-target-runs",
        dest="target_runs",
        action="store_false",
        help="do not run the targets' configurations once past the time limit",
    )
    p.add_argument("--out", type=Path, help="markdown [docs/benchmarks.md; quick: runs/]")
    p.add_argument("--json", type=Path, help="raw records [next to --out, .json]")
    p.add_argument(
        "--report-only", type=Path, metavar="JSON", help="re-render --out from a saved JSON"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def _resolve(args) -> None:
    if args.quick:
        batches = args.batch_sizes or QUICK_BATCHES
        args.batches = {f: batches for f in FAMILIES}
        args.dims = args.dims or QUICK_DIMS
        args.out = args.out or ROOT / "runs" / "bench-quick.md"
    else:
        args.batches = {f: args.batch_sizes for f in FAMILIES} if args.batch_sizes else FULL_BATCHES
        args.dims = args.dims or FULL_DIMS
        args.out = args.out or ROOT / "docs" / "benchmarks.md"
    args.batches = {f: sorted({*PROBES, *b}) for f, b in args.batches.items()}
    args.json = args.json or args.out.with_suffix(".json")
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"error: unknown family {unknown}; known: {', '.join(FAMILIES)}")
    known = {i.name for f in FAMILIES for i in IMPLS[f]}
    args.impls = args.impls or sorted(known)
    if set(args.impls) - known:
        raise SystemExit(
            f"error: unknown impls {sorted(set(args.impls) - known)}; known: "
            f"{', '.join(sorted(known))}"
        )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    _resolve(args)
    if args.report_only:
        payload = json.loads(args.report_only.read_text())
    else:
        shown = sys.argv[1:] if argv is None else argv
        command = shlex.join([*(parser.prog.split()), *shown])

        def log(text, end="\n"):
            print(text, end=end, file=sys.stderr, flush=True)

        load_before = _load_average()
        if load_before > 0.5:
            log(
                f"warning: 1-minute load average is {load_before:.2f}: other processes compete "
                "for the CPUs and will slow the timings down"
            )
        started = time.perf_counter()
        records = plan_and_run(args, log)
        loads = [r["load_before"] for r in records if "load_before" in r]
        meta = {
            "command": command,
            "load_before": load_before,
            "load_max": max(loads, default=load_before),
            "duration_s": time.perf_counter() - started,
            "batches": args.batches,
            "dims": args.dims,
            "families": args.families,
            "tile": args.tile,
            "max_seconds": args.max_seconds,
            "max_gib": args.max_gib,
            "max_calls": args.max_calls,
            "target_runs": args.target_runs,
        }
        payload = {"meta": meta, "machine": machine_info(args.threads), "records": records}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"json: {args.json}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = kept_sections(args.out.read_text()) if args.out.is_file() else ""
    args.out.write_text(render_markdown(payload) + kept)
    print(f"markdown: {args.out}", file=sys.stderr)
    return 0


# Sections other benchmark scripts own (scripts/text_epoch_cost.py writes "## Text: ...").
KEPT_PREFIXES = ("## Text:",)


def kept_sections(markdown: str) -> str:
    """The sections of ``markdown`` whose heading starts with one of ``KEPT_PREFIXES``
    (each up to the next ``## `` heading), to append after a rewrite."""
    parts = re.split(r"(?m)^(?=## )", markdown)
    kept = [p.rstrip("\n") + "\n" for p in parts if p.startswith(KEPT_PREFIXES)]
    return "".join("\n" + p for p in kept)


if __name__ == "__main__":
    raise SystemExit(main())
