"""Summary of the results folder: the targets of issue 5 (pass/miss) and the plot.

    python bench/report.py [RESULTS_DIR]

Reads ``<scenario>.json`` written by ``run.py`` and writes ``summary.md`` and
``throughput_latency.png`` (the plot needs matplotlib; without it only the table is written).
Every ratio is the median, over the repetitions of one invocation, of the ratio between
runs that were adjacent in time (ours, then Tungstenkit, on the same load).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def runs(record: dict[str, Any], server: str, label: str, workers: int | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in record["runs"]
        if r["server"] == server and r["load"]["label"] == label and (workers is None or r.get("workers") == workers)
    ]


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired(ours: list[dict[str, Any]], tk: list[dict[str, Any]], figure) -> float | None:
    """Median of per-repetition ratios ours/tk for ``figure(run)``."""
    ratios = []
    for a, b in zip(sorted(ours, key=lambda r: r["rep"]), sorted(tk, key=lambda r: r["rep"])):
        fa, fb = figure(a), figure(b)
        if fa is not None and fb:
            ratios.append(fa / fb)
    return median(ratios)


def cpu_per_prediction(run: dict[str, Any]) -> float | None:
    """CPU milliseconds the server's processes (API, workers, Redis; TK: its two) spent per prediction."""
    return 1000 * run["cpu_s_server_total"] / run["predictions"] if run["predictions"] else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**miss**")


def build(results: Path) -> str:
    rows: list[str] = []
    targets: list[str] = []
    inputs_per_s = lambda r: r["inputs_per_s"]
    requests_per_s = lambda r: r["requests_per_s"]
    for name in ("a", "b", "c", "d", "e", "g"):
        record = load(results, name)
        if record is None:
            continue
        labels = list(dict.fromkeys(r["load"]["label"] for r in record["runs"]))
        for label in labels:
            for workers in sorted({r.get("workers", 1) for r in runs(record, "ours", label)}):
                ours = runs(record, "ours", label, workers)
                tk = runs(record, "tungstenkit", label)
                m = lambda rs, f: median([f(r) for r in rs])
                direct = record["direct"]["inputs_per_s"]
                rows.append(
                    f"| ({name}) {label}{f' ({workers} workers)' if len(record.get('runs')) and name == 'g' else ''} "
                    f"| {fmt(m(ours, inputs_per_s), 0)} | {fmt(m(tk, inputs_per_s), 0) if tk else '-'} | {fmt(direct, 0)} "
                    f"| {fmt(paired(ours, tk, inputs_per_s)) if tk else '-'} "
                    f"| {fmt(m(ours, lambda r: r['latency_ms']['p50']))} / {fmt(m(ours, lambda r: r['latency_ms']['p99']))} "
                    f"| {(fmt(m(tk, lambda r: r['latency_ms']['p50'])) + ' / ' + fmt(m(tk, lambda r: r['latency_ms']['p99']))) if tk else '-'} "
                    f"| {fmt(m(ours, lambda r: r['batches']['mean']))} | {fmt(m(tk, lambda r: r['batches']['mean'])) if tk else '-'} "
                    f"| {fmt(m(ours, lambda r: r['http_per_prediction']))} | {fmt(m(tk, lambda r: r['http_per_prediction'])) if tk else '-'} "
                    f"| {fmt(m(ours, lambda r: r['redis_commands_per_input']))} "
                    f"| {fmt(m(ours, cpu_per_prediction), 3)} / {fmt(m(tk, cpu_per_prediction), 3) if tk else '-'} "
                    f"| {fmt(m(ours, lambda r: r['batches'].get('interval_ms', {}).get('p50')))} |"
                )
        ours_all = [r for r in record["runs"] if r["server"] == "ours"]
        tk_all = [r for r in record["runs"] if r["server"] == "tungstenkit"]
        if name == "a" and tk_all:
            p50 = paired(ours_all, tk_all, lambda r: r["latency_ms"]["p50"])
            p99 = paired(ours_all, tk_all, lambda r: r["latency_ms"]["p99"])
            targets.append(
                f"| (a) 1 client, p50 ours/TK | <= 0.70 | {fmt(p50)} | {verdict(p50 is not None and p50 <= 0.7)} |"
            )
            targets.append(
                f"| (a) 1 client, p99 ours/TK | < 1.00 | {fmt(p99)} | {verdict(p99 is not None and p99 < 1)} |"
            )
        if name == "b" and tk_all:
            ratio = paired(ours_all, tk_all, requests_per_s)
            targets.append(
                f"| (b) no-op, 64 clients, requests/s ours/TK | >= 5.0 | {fmt(ratio)} | {verdict(ratio is not None and ratio >= 5)} |"
            )
        if name == "c":
            if tk_all:
                ratio = paired(ours_all, tk_all, inputs_per_s)
                targets.append(
                    f"| (c) 20 ms, 64 clients, inputs/s ours/TK | >= 3.3 | {fmt(ratio)} | {verdict(ratio is not None and ratio >= 3.3)} |"
                )
            batch = median([r["batches"]["mean"] for r in ours_all])
            targets.append(
                f"| (c) mean batch (ours) | >= 28 | {fmt(batch, 1)} | {verdict(batch is not None and batch >= 28)} |"
            )
        if name == "d":
            for label, goal in (("16 clients x 4", 0.95), ("4 clients x 32", 0.97)):
                value = median([r["inputs_per_s"] for r in runs(record, "ours", label)])
                share = value / 1600 if value else None
                direct = record["direct"]["inputs_per_s"]
                targets.append(
                    f"| (d) 20 ms, {label}, inputs/s / ideal 1,600 | >= {goal} | {fmt(share, 3)} "
                    f"(of the measured direct loop {fmt(value / direct if value else None, 3)}) | {verdict(share is not None and share >= goal)} |"
                )
        if name in ("b", "c", "d"):
            for label in labels:
                value = median([r["redis_commands_per_input"] for r in runs(record, "ours", label)])
                targets.append(
                    f"| ({name}) {label}: Redis commands per input | <= 6 | {fmt(value)} | {verdict(value is not None and value <= 6)} |"
                )
        if name == "g":
            label = labels[0]
            one = median([r["inputs_per_s"] for r in runs(record, "ours", label, 1)])
            two = median([r["inputs_per_s"] for r in runs(record, "ours", label, 2)])
            ratio = two / one if one and two else None
            targets.append(
                f"| (g) 100 ms, 2 workers / 1 worker | >= 1.9 | {fmt(ratio)} | {verdict(ratio is not None and ratio >= 1.9)} |"
            )
    lines = [
        "# Benchmark summary",
        "",
        "Generated by `bench/report.py` from the JSON files beside it. Medians over the repetitions of one run;",
        "ratios are medians of per-repetition ratios between adjacent runs of the two servers.",
        "",
        "## Targets (issue 5)",
        "",
        "| target | goal | measured | verdict |",
        "|---|---|---|---|",
        *targets,
        "",
        "## Ours vs Tungstenkit 0.2.20 vs the direct loop",
        "",
        (
            "| scenario, load | ours inputs/s | TK inputs/s | direct loop inputs/s | ours/TK | ours p50 / p99 ms "
            "| TK p50 / p99 ms | ours mean batch | TK mean batch | ours HTTP/pred | TK HTTP/pred "
            "| ours Redis cmds/input | server CPU ms per prediction, ours / TK | ours batch start-to-start p50 ms |"
        ),
        "|" + "---|" * 14,
        *rows,
    ]
    accounting = load(results, "accounting")
    if accounting is not None:
        lines += [
            "",
            "## Redis commands, by who sends them (MONITOR, a short run of each load)",
            "",
            "Commands inside Lua scripts run in Redis in the same round trip as the script call.",
            "",
            (
                "| load | predictions | inputs | batches | API commands per prediction | worker commands per batch "
                "| Lua-internal commands per input | all commands per input |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in accounting["runs"]:
            lines.append(accounting_row(run))
    f = load(results, "f")
    if f is not None:
        lines += [
            "",
            "## (f) Open loop: latency against arrival rate (fixed 20 ms model, 1 input per request)",
            "",
            "| offered req/s | server | achieved inputs/s | p50 ms | p90 ms | p99 ms | mean batch | not finished |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in f["runs"]:
            unfinished = sum(v for k, v in r["statuses"].items() if k != "success")
            lines.append(
                f"| {r['load']['rate']:g} | {r['server']} | {r['inputs_per_s']:.0f} | {r['latency_ms']['p50']} "
                f"| {r['latency_ms']['p90']} | {r['latency_ms']['p99']} | {r['batches']['mean']} | {unfinished} |"
            )
        if plot(f, results / "throughput_latency.png"):
            lines += ["", "![throughput and latency against load](throughput_latency.png)"]
    text = "\n".join(lines) + "\n"
    (results / "summary.md").write_text(text)
    return text


def accounting_row(run: dict[str, Any]) -> str:
    per_input = int(run["label"].rsplit("x", 1)[1])
    by = run["by_process"]
    api = {k: v for k, v in by.get("api", {}).items() if k not in ("hello", "ping", "script")}
    worker = {
        k: v
        for k, v in by.get("worker-1", {}).items()
        if k not in ("hello", "ping", "script", "hset", "pexpire", "zadd")
    }
    lua = by.get("lua (inside scripts)", {})
    # The API sends the submits of concurrent requests in one script call, so count
    # predictions by their stream entries (one per prediction at these sizes).
    predictions = lua.get("xadd", 0)
    # Batches that ended before their start was announced send no start script.
    batches = max(worker.get("evalsha start", 0), worker.get("evalsha finish", 0))
    inputs = predictions * per_input
    if not predictions or not batches:
        return f"| ({run['for_scenario']}) {run['label']} | - | - | - | - | - | - | - |"
    total = sum(api.values()) + sum(worker.values()) + sum(lua.values())
    detail = lambda d: ", ".join(f"{k} {v / (predictions if d is api else batches):.2f}" for k, v in d.items())
    return (
        f"| ({run['for_scenario']}) {run['label']} | {predictions} | {inputs} | {batches} "
        f"| {sum(api.values()) / predictions:.2f} ({detail(api)}) | {sum(worker.values()) / batches:.2f} ({detail(worker)}) "
        f"| {sum(lua.values()) / inputs:.2f} | {total / inputs:.2f} |"
    )


def plot(record: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": ("tab:blue", "ours (long-poll)"), "tungstenkit": ("tab:orange", "Tungstenkit 0.2.20 (polling)")}
    for server, (color, name) in styles.items():
        by_rate: dict[float, list[dict[str, Any]]] = {}
        for r in record["runs"]:
            if r["server"] == server:
                by_rate.setdefault(r["load"]["rate"], []).append(r)
        if not by_rate:
            continue
        rates = sorted(by_rate)
        achieved = [median([r["inputs_per_s"] for r in by_rate[x]]) for x in rates]
        p50 = [median([r["latency_ms"]["p50"] for r in by_rate[x]]) for x in rates]
        p99 = [median([r["latency_ms"]["p99"] for r in by_rate[x]]) for x in rates]
        left.plot(rates, achieved, "o-", color=color, label=name)
        right.plot(rates, p50, "o-", color=color, label=f"{name} p50")
        right.plot(rates, p99, "s--", color=color, label=f"{name} p99")
    top = max(r["load"]["rate"] for r in record["runs"])
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    left.axhline(1600, color="grey", linestyle="-.", linewidth=0.8, label="ideal (32 per 20 ms)")
    left.set_xlabel("offered load (requests/s, 1 input each)")
    left.set_ylabel("served inputs/s")
    left.set_title("Throughput against load")
    left.legend(fontsize=8)
    right.set_yscale("log")
    right.set_xlabel("offered load (requests/s, 1 input each)")
    right.set_ylabel("latency (ms)")
    right.set_title("Latency against load")
    right.legend(fontsize=7)
    fig.suptitle("Fixed 20 ms per batch (up to 32 inputs), open loop, 2-core machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    print(build(folder))
