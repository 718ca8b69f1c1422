"""Part 2 of the sampling benchmark: label-to-next-item latency in the real UI with a warm queue.

A temporary database gets a pairwise project on the embedded model with items generated ahead
(the warm queue). `app.py serve` runs as a subprocess with its background generator on, so the
model keeps sampling on the same CPU while we annotate, as in real use. Headless Chromium picks
"A" for each item and clicks Submit; the time is measured inside the page, from the click to the
moment the status line names the next item (the new item is rendered in the same update).

Run by ``python -m bench.sampling``, or alone (raw figures to ``bench/results/queue_latency.json``):

    python -m bench.queue_latency --labels 30
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import add_json_option, measured, write_results

# In-page timer: click Submit, resolve when #status names an item other than `previous`.
_TIME_SUBMIT_JS = """
async (previous) => {
  const status = document.querySelector('#status');
  const shown = () => { const m = /Item (\\d+)\\./.exec(status.innerText); return m && m[1] !== previous ? m[1] : null; };
  const t0 = performance.now();
  const done = new Promise((resolve) => {
    const obs = new MutationObserver(() => { const n = shown(); if (n) { obs.disconnect(); resolve(n); } });
    obs.observe(status, {subtree: true, childList: true, characterData: true});
  });
  document.querySelector('#submit-pair').click();
  const next = await done;
  return [performance.now() - t0, next];
}
"""


@dataclass
class LatencyResult:
    samples_ms: list[float]
    generator: bool = True  # the background generator sampled while we labelled
    queue_s: float = 0.0  # time to generate the warm queue beforehand
    window: dict[str, Any] = field(default_factory=dict)  # load average at the start and end of labelling

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]

    def table(self) -> str:
        s = self.samples_ms
        return (f"{'labels':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'mean ms':>8}\n"
                f"{len(s):>8} {self.percentile(50):>8.0f} {self.percentile(95):>8.0f} {max(s):>8.0f} "
                f"{statistics.mean(s):>8.0f}")

    def summary(self) -> dict[str, float]:
        return {"labels": len(self.samples_ms), "p50_ms": self.percentile(50), "p95_ms": self.percentile(95),
                "max_ms": max(self.samples_ms), "mean_ms": statistics.mean(self.samples_ms)}


def prepare_database(path: Path, model: str, items: int, max_new_tokens: int) -> None:
    """A pairwise project on `model` with `items` items already generated (the warm queue)."""
    from annotation.generation import default_backend_factory, generate_items
    from annotation.services.projects import ProjectSettings, create_project
    from annotation.services.prompts import add_text_prompts, starter_prompts
    from storage.db import open_database

    db = open_database(path)
    create_project(db, ProjectSettings(name="bench", model=model, max_new_tokens=max_new_tokens,
                                       queue_target=items))
    add_text_prompts(db, "bench", "\n".join(starter_prompts()))
    generate_items(db, "bench", default_backend_factory(model), limit=items, seed=0, batch_prompts=4)


def measure_label_latency(model: str = "default", labels: int = 20, max_new_tokens: int = 32,
                          generator: bool = True) -> LatencyResult:
    from playwright.sync_api import sync_playwright

    from tests.browser_support import ServerProcess, launch_browser, new_page, start_annotating, wait_status

    folder = Path(tempfile.mkdtemp(prefix="prefstudio-bench-"))
    started = time.perf_counter()
    prepare_database(folder / "bench.db", model, items=labels + 4, max_new_tokens=max_new_tokens)
    queue_s = time.perf_counter() - started
    print(f"warm queue: {labels + 4} items generated in {queue_s:.0f} s")
    window: dict[str, Any] = {}
    server = ServerProcess(["--db", str(folder / "bench.db"), *([] if generator else ["--no-worker"])],
                           folder / "server.log")
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = new_page(browser, server.url)
            start_annotating(page, "bench", "bench")
            wait_status(page, r"Item \d+\.")
            samples = []
            with measured(window):
                for _ in range(labels):
                    current = page.locator("#status").inner_text().split("Item ")[-1].rstrip(". \n")
                    page.locator("#choice label").first.click()
                    elapsed_ms, _next = page.evaluate(_TIME_SUBMIT_JS, current)
                    samples.append(elapsed_ms)
            browser.close()
    finally:
        server.stop()
    return LatencyResult(samples, generator, queue_s, window)


def run_latency(model: str, labels: int) -> dict[str, Any]:
    """Both settings, generator stopped then running: print their tables, return the raw figures."""
    print("\n== label -> next item latency in the browser, warm queue (target p95 < 300 ms)")
    idle = measure_label_latency(model, labels=labels, generator=False)
    print("generator stopped (UI and database alone):\n" + idle.table())
    busy = measure_label_latency(model, labels=labels, generator=True)
    print("generator sampling in the background (normal operation):\n" + busy.table())
    verdict = "meets" if busy.percentile(95) < 300 else "MISSES"
    print(f"p95 with the generator running: {busy.percentile(95):.0f} ms, {verdict} the 300 ms target")
    return {setting: {**result.summary(), "raw": result}
            for setting, result in (("generator_stopped", idle), ("generator_running", busy))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--labels", type=int, default=20, help="labels submitted per setting")
    add_json_option(parser, "queue_latency")
    args = parser.parse_args(argv)
    write_results(args.json, "queue_latency", args, {"latency": run_latency(args.model, args.labels)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
