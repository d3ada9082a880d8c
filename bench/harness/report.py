"""Scenario results as markdown: one file per scenario in bench/results/, the ratio
table printed at the end, and the full run written into docs/benchmarks.md between
its RUN markers."""

import datetime
import os
import platform
import re

from . import peers, system

RESULTS = os.path.join(peers.BENCH, "results")
DOCS = os.path.join(peers.ROOT, "docs", "benchmarks.md")
BEGIN = "<!-- BEGIN LATEST RUN (written by bench/run.sh) -->"
END = "<!-- END LATEST RUN -->"


class Scenario:
    """What a scenario found: tables, target checks and notes."""

    def __init__(self, key, title, how):
        self.key = key
        self.title = title
        self.how = how
        self.tables = []
        self.checks = []  # (target, measured, passed)
        self.notes = []
        self.load = []

    def table(self, header, rows, caption=None):
        self.tables.append((caption, header, rows))

    def check(self, target, measured, passed):
        """`passed` None: a figure reported without a target."""
        self.checks.append((target, measured, None if passed is None else bool(passed)))

    def note(self, text):
        self.notes.append(text)

    def markdown(self, level=2):
        h = "#" * level
        out = [f"{h} {self.key}: {self.title}", "", self.how, ""]
        for caption, header, rows in self.tables:
            if caption:
                out += [f"*{caption}*", ""]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            for row in rows:
                out.append("| " + " | ".join(str(c) for c in row) + " |")
            out.append("")
        if self.checks:
            out += ["| target | measured | |", "|---|---|---|"]
            for target, measured, passed in self.checks:
                out.append(f"| {target} | {measured} | {verdict(passed)} |")
            out.append("")
        if self.load:
            out.append(f"Load average during the scenario: {min(self.load):.2f}-{max(self.load):.2f}.")
            out.append("")
        for n in self.notes:
            out += [n, ""]
        return "\n".join(out)


def machine(versions):
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    lines = [
        f"- Machine: {os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}",
        f"- Load average at the end: {system.loadavg():.2f}",
    ]
    lines += [f"- {v}" for v in versions if v]
    return "\n".join(lines)


def write(scenarios, versions, command, started, full=True):
    """Results files for every scenario run; docs/benchmarks.md only for a full run."""
    os.makedirs(RESULTS, exist_ok=True)
    date = started.strftime("%Y-%m-%d")
    header = machine(versions)
    for s in scenarios:
        path = os.path.join(RESULTS, f"{date}-{s.key}.md")
        with open(path, "w") as f:
            f.write(f"# Benchmark {s.key}, {started:%Y-%m-%d %H:%M} UTC\n\n{header}\n- Command: `{command}`\n\n")
            f.write(s.markdown(level=2))
    if not full:
        return
    body = [BEGIN, "", f"## Latest full run: {started:%Y-%m-%d %H:%M} UTC", "", header,
            f"- Command: `{command}`",
            f"- Duration: {(datetime.datetime.now(datetime.timezone.utc) - started).seconds // 60} min", "",
            "### Targets", "", summary_table(scenarios), ""]
    for s in scenarios:
        body.append(s.markdown(level=3))
    body.append(END)
    text = open(DOCS).read() if os.path.exists(DOCS) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: "\n".join(body), text, flags=re.S)
    with open(DOCS, "w") as f:
        f.write(text)


def summary_table(scenarios):
    rows = ["| scenario | target | measured | |", "|---|---|---|---|"]
    for s in scenarios:
        for target, measured, passed in s.checks:
            rows.append(f"| {s.key} | {target} | {measured} | {verdict(passed)} |")
    return "\n".join(rows)


def verdict(passed):
    return "reported" if passed is None else ("met" if passed else "**missed**")

