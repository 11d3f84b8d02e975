"""The benchmark report: JSON in the shape docs/evaluation.md gives, a Markdown table, PNG plots."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ecomrec.version import __version__
from ecomrec.artifacts import library_versions
from ecomrec.device import resolve_device

METRIC_COLUMNS = ("recall@10", "recall@20", "recall@50", "recall@100", "recall@200", "ndcg@10", "mrr@10", "hit@10", "coverage@10")


@dataclasses.dataclass
class BenchmarkReport:
    """Results of one protocol run; :meth:`save` writes ``.json``, ``.md`` and ``.png`` files."""

    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)
    protocol: dict[str, Any] = dataclasses.field(default_factory=dict)
    results: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    throughput: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    comparisons: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    breakdown: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkReport:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: str | Path) -> list[Path]:
        """Write ``path`` (JSON), and beside it ``.md``, ``.png`` (recall@k) and ``-latency.png``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        markdown = target.with_suffix(".md")
        markdown.write_text(self.to_markdown(), encoding="utf-8")
        written = [target, markdown, target.with_suffix(".png")]
        self.plot_recall(written[-1])
        if self.latency_ms:
            written.append(target.with_name(target.stem + "-latency.png"))
            self.plot_latency(written[-1])
        if self.calibration:
            written.append(target.with_name(target.stem + "-reliability.png"))
            self.plot_reliability(written[-1])
        return written

    def plot_reliability(self, path: Path) -> None:
        """Predicted vs observed purchase rate per probability bin, one line per reranker."""
        with _figure(path, figsize=(5, 5)) as (_, ax):
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
            for method, cal in self.calibration.items():
                bins = cal["bins"]
                ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o",
                        label=f"{method} (ECE {cal['ece']:.3f})")
            ax.set(xlabel="predicted P(purchase)", ylabel="observed purchase rate", title="reliability, test window")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)

    def to_markdown(self) -> str:
        """Tables: quality per target set, then latency and throughput."""
        d, p = self.dataset, self.protocol
        lines = [f"Dataset `{d.get('name')}` (fingerprint `{d.get('fingerprint')}`): {d.get('rows', 0):,} clean "
                 f"interactions, {d.get('users', 0):,} users, {d.get('items', 0):,} items; test "
                 f"{p.get('test_from')} .. {p.get('test_to')}; {d.get('evaluated_users', 0):,} evaluated users "
                 f"({d.get('evaluated_users_new', 0):,} with new items); cold target share "
                 f"{_fmt(d.get('cold_target_share'))} (all) / {_fmt(d.get('cold_target_share_new'))} (new).", ""]
        for target in ("all", "new"):
            lines += [f"**{target}** targets", "", "| method | " + " | ".join(METRIC_COLUMNS) + " |",
                      "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
            for method, result in self.results.items():
                row = result.get(target, {})
                lines.append(f"| {method} | " + " | ".join(_fmt(row.get(c)) for c in METRIC_COLUMNS) + " |")
            lines.append("")
        if self.latency_ms:
            lines += ["**latency** (ms per single-user call, after warm-up) and batch throughput", "",
                      "| stage | p50 | p95 | p99 | users/s (batch) |", "|---|---|---|---|---|"]
            for stage, stats in self.latency_ms.items():
                rate = self.throughput.get(stage, {}).get("users_per_s")
                lines.append(f"| {stage} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['p99']:.2f} | "
                             f"{'' if rate is None else f'{rate:,.0f}'} |")
            lines.append("")
        for method, check in self.checks.items():
            lines.append(f"Check: `{method}` through its {check['index']} index vs scoring every item directly: identical "
                         f"top-{check['k']} for {check['same_top_k_share']:.1%} of users (ties aside), mean overlap "
                         f"{check['mean_overlap']:.4f}.")
        if self.checks:
            lines.append("")
        if self.comparisons:
            lines += ["**paired comparisons** (ndcg@10, mean per-user difference, 95 % bootstrap interval over users)", "",
                      "| comparison | target | difference | 95 % interval | excludes 0 |", "|---|---|---|---|---|"]
            for name, by_target in self.comparisons.items():
                for target, c in by_target.items():
                    lines.append(f"| {name} | {target} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                                 f"{'yes' if c['excludes_zero'] else 'no'} |")
            lines.append("")
        lines += self._breakdown_markdown()
        lines += self._choices_markdown()
        for method, cal in self.calibration.items():
            lines.append(f"Calibration of `{method}` on the test window: ECE {cal['ece']:.4f} over {cal['pairs']:,} reranked "
                         f"pairs (mean predicted {cal['mean_predicted']:.4f}, observed {cal['observed']:.4f}).")
        if self.calibration:
            lines.append("")
        env = self.environment
        lines.append(f"Environment: {env.get('device')} · {env.get('cpu_count')} CPUs · python {env.get('python')} · "
                     f"ecomrec {env.get('ecomrec')} @ {env.get('git_sha')}")
        return "\n".join(lines) + "\n"

    def _choices_markdown(self) -> list[str]:
        """What each method chose on its own validation window, and which stages it kept."""
        lines = []
        for method, info in self.methods.items():
            if tuning := info.get("tuning"):
                weights = ", ".join(f"{s} {w:g}" for s, w in info.get("weights", {}).items() if w > 0)
                lines.append(f"| {method} | fusion, validation from {tuning['start'][:10]} ({tuning['users']:,} users) | "
                             f"{tuning['kept']}: {weights}; depth {tuning['depth']} | mean recall@50/100/200 {tuning['objective']:.4f} |")
            if check := info.get("training", {}).get("validation"):
                for kind, by_list in check["by_list"].items():
                    kept = check["order"][kind]
                    text = f", with text score {_fmt(by_list['purchase_model_text_ndcg@10'])}" if "purchase_model_text_ndcg@10" in by_list else ""
                    lines.append(f"| {method} | reranker on {kind} lists, cutoff {check['cutoff']} ({by_list['lists']:,} lists) | "
                                 f"{kept} order | ndcg@10 model {_fmt(by_list.get('purchase_model_ndcg@10'))}{text}, fused "
                                 f"{_fmt(by_list.get('fused_ndcg@10'))}, kept {_fmt(by_list.get(f'{kept}_ndcg@10'))} |")
            if calibration := info.get("training", {}).get("calibration"):
                cells = ", ".join(f"{way} {calibration[way]['within_kinds']:.4f}" for way in ("one_fit", "per_list_kind"))
                lines.append(f"| {method} | calibration, cutoff {calibration['cutoff']} (half the users fit, half judge) | "
                             f"{calibration['kept']} | ECE within list kinds: {cells} |")
        if not lines:
            return []
        head = ["**chosen on validation** (each method's own windows before the test window; stages kept or bypassed)", "",
                "| method | stage, window | kept | validation |", "|---|---|---|---|"]
        return head + lines + [""]

    def _breakdown_markdown(self) -> list[str]:
        if not self.breakdown:
            return []
        by_history = self.breakdown["ndcg@10_by_history_length"]
        methods = [m for m in by_history["all"][0] if m not in ("items", "users")]
        lines = ["**ndcg@10 by the user's history length** (distinct items bought before the split)", "",
                 "| target | items | users | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
        for target, rows in by_history.items():
            for row in rows:
                lines.append(f"| {target} | {row['items']} | {row['users']} | " + " | ".join(_fmt(row[m]) for m in methods) + " |")
        return lines + [""] + slices_markdown(self.breakdown.get("slices") or [], methods)

    def plot_recall(self, path: Path) -> None:
        """recall@k curves, one line per method, one panel per target set."""
        ks = sorted(int(key.split("@")[1]) for key in next(iter(self.results.values()), {}).get("all", {}) if key.startswith("recall@"))
        with _figure(path, 1, 2, figsize=(11, 4.2), sharey=False) as (fig, axes):
            for ax, target in zip(axes, ("all", "new")):
                for method, result in self.results.items():
                    ax.plot(ks, [result[target][f"recall@{k}"] for k in ks], marker="o", label=method)
                ax.set(xscale="log", xlabel="k", ylabel="recall@k", title=f"{target} targets")
                ax.set_xticks(ks, [str(k) for k in ks])
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=8)
            fig.suptitle(f"{self.dataset.get('name')} · test from {self.protocol.get('test_from')}")

    def plot_latency(self, path: Path) -> None:
        """p50 bars with p95/p99 markers per stage."""
        stages = list(self.latency_ms)
        with _figure(path, figsize=(1.2 * len(stages) + 3, 4)) as (_, ax):
            ax.bar(stages, [self.latency_ms[s]["p50"] for s in stages], color="tab:blue", label="p50")
            ax.scatter(stages, [self.latency_ms[s]["p95"] for s in stages], color="tab:orange", zorder=3, label="p95")
            ax.scatter(stages, [self.latency_ms[s]["p99"] for s in stages], color="tab:red", marker="x", zorder=3, label="p99")
            ax.set(ylabel="ms per single-user call", title="latency per stage")
            ax.legend()
            ax.grid(axis="y", alpha=0.3)


def slices_markdown(slices: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """The slice table (``breakdown["slices"]``, or pooled over origins) as Markdown lines."""
    if not slices:
        return []
    pairs = list(dict.fromkeys(name for row in slices for name in row["comparisons"]))
    lines = ["**slices** (target kinds pooled per user: `repurchase` on the `all` ranking, items new to the user on "
             "the `new` one — `new_warm`, `new_arrival` (first sold within 30 days before the cutoff), `cold` / "
             "`unlisted` (never sold before it); `few_baskets`: users with ≤ 2 earlier baskets). Per method "
             "recall@10 / ndcg@10; comparisons: mean per-user difference of the slice's metric, 95 % bootstrap interval", ""]
    lines += ["| slice | ranking | metric | users | targets | " + " | ".join(methods + pairs) + " |",
              "|---|---|---|---|---|" + "---|" * (len(methods) + len(pairs))]
    for row in slices:
        cells = [f"{_fmt(row['methods'][m]['recall@10'])} / {_fmt(row['methods'][m]['ndcg@10'])}" if m in row["methods"] else ""
                 for m in methods]
        for pair in pairs:
            c = row["comparisons"].get(pair)
            cells.append(f"{c['mean_diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c else "")
        lines.append(f"| {row['slice']} | {row['ranking']} | {row['metric']} | {row['users']:,} | {row['targets']:,} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def origins_markdown(result: dict[str, Any]) -> str:
    """:func:`~ecomrec.evaluation.protocol.benchmark_origins`'s result: ndcg@10 per origin and
    method, then the pooled slice table."""
    origins = result["origins"]
    methods = list(next(iter(origins.values()))["results"])
    lines = ["**ndcg@10 per origin** (all / new; each origin fitted on the data before it, scored on the month after)", "",
             "| origin | users | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for origin, report in origins.items():
        cells = [f"{_fmt(report['results'][m]['all']['ndcg@10'])} / {_fmt(report['results'][m]['new']['ndcg@10'])}" for m in methods]
        lines.append(f"| {origin} | {report['dataset'].get('evaluated_users', 0):,} | " + " | ".join(cells) + " |")
    calibrated = list(dict.fromkeys(m for report in origins.values() for m in report.get("calibration") or {}))
    if calibrated:  # ECE of each reranker's probabilities per origin
        lines += ["", "**calibration per origin** (ECE on the `all` lists; mean predicted / observed purchase rate)", "",
                  "| origin | " + " | ".join(calibrated) + " |", "|---|" + "---|" * len(calibrated)]
        for origin, report in origins.items():
            cal = report.get("calibration") or {}
            cells = [f"{cal[m]['ece']:.4f} ({cal[m]['mean_predicted']:.3f} / {cal[m]['observed']:.3f})" if m in cal else ""
                     for m in calibrated]
            lines.append(f"| {origin} | " + " | ".join(cells) + " |")
    for origin, report in origins.items():
        choices = BenchmarkReport(**report)._choices_markdown() if report.get("methods") else []
        if choices:
            lines += ["", f"Origin {origin}: " + choices[0][2:].replace("** (", " (", 1)] + choices[1:-1]
    lines += ["", f"Pooled over {len(origins)} origins (user-origin pairs):", ""]
    slices = result["pooled"]["slices"]
    compared = list(dict.fromkeys(m for row in slices for m in row["methods"]))
    return "\n".join(lines + slices_markdown(slices, compared)) + "\n"


def _fmt(value: object) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _figure(path: Path, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """``plt.subplots(*args, **kwargs)`` for the block, then laid out, saved to ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    yield fig, axes
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment() -> dict[str, Any]:
    """Device, threads, versions and git SHA for the report."""
    from threadpoolctl import threadpool_info

    blas = [f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info() if p.get("user_api") == "blas"]
    return {"device": resolve_device(), "cpu_count": os.cpu_count(), "blas_threads": blas,
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "ecomrec": __version__, "git_sha": _git_sha(), "versions": library_versions()}


def _git_sha() -> str | None:
    """Short SHA of the checkout ecomrec runs from, ``+dirty`` with uncommitted changes; None outside git."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "--short", "HEAD")
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if sha else None
