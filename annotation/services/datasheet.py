"""The datasheet written beside every export: what the data is, who made it and how far they agree.

Two files with the same content: DATASHEET.md for people and datasheet.json for programs. A
`datasets` folder holds them inside; a JSONL file gets `<name>.DATASHEET.md` and
`<name>.datasheet.json` beside it. They say which project, mode, format and filters produced the
rows, the label counts per annotator and review status, the agreement figures with their bootstrap
intervals, and each annotator's accuracy on gold items (after Gebru et al. 2021, "Datasheets for
Datasets", reduced to what the database knows).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from annotation.services.gold import gold_items
from annotation.services.team import team_report
from storage.db import Database
from storage.exporting import ExportResult

MARKDOWN, JSON = "DATASHEET.md", "datasheet.json"


def datasheet(db: Database, result: ExportResult, filters: dict) -> dict:
    report = team_report(db, result.project)
    return {"project": result.project, "mode": report.mode, "format": result.format, "rows": result.rows,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "filters": filters,
            "gold_items": len(gold_items(db, result.project)), **report.as_dict()}


def datasheet_paths(out: Path) -> tuple[Path, Path]:
    if out.is_dir():
        return out / MARKDOWN, out / JSON
    return out.with_name(f"{out.stem}.{MARKDOWN}"), out.with_name(f"{out.stem}.{JSON}")


def write_datasheet(db: Database, result: ExportResult, filters: dict) -> list[Path]:
    sheet = datasheet(db, result, filters)
    markdown, as_json = datasheet_paths(Path(result.path))
    markdown.write_text(render_markdown(sheet), encoding="utf-8")
    as_json.write_text(json.dumps(sheet, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return [markdown, as_json]


def _figure(interval: dict | None) -> str:
    if interval is None or interval["estimate"] is None:
        return "n/a"
    if interval["low"] is None:
        return f"{interval['estimate']:.3f}"
    return (f"{interval['estimate']:.3f} ({interval['confidence']:.0%} bootstrap interval "
            f"{interval['low']:.3f} to {interval['high']:.3f}, {interval['bootstrap_samples']} resamples)")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def render_markdown(sheet: dict) -> str:
    agreement = sheet["agreement"]
    filters = ", ".join(f"{k}: {v}" for k, v in sheet["filters"].items()) or "none"
    lines = [
        f"# Datasheet: {sheet['project']} ({sheet['format']})", "",
        f"- Project mode: {sheet['mode']}; rows exported: {sheet['rows']}; exported at {sheet['exported_at']}",
        f"- Filters: {filters}",
        f"- Gold items (known answers): {sheet['gold_items']}", "",
        "## Labels per annotator", "",
        "| annotator | labels | submitted | accepted | corrected | rejected | median s/label | skip rate "
        "| with majority | gold accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in sheet["annotators"]:
        r = a["reviews"]
        seconds = "n/a" if a["median_seconds"] is None else f"{a['median_seconds']:.1f}"
        lines.append(f"| {a['annotator']} | {a['labels']} | {r.get('submitted', 0)} | {r.get('accepted', 0)} "
                     f"| {r.get('corrected', 0)} | {r.get('rejected', 0)} | {seconds} | {_share(a['skip_rate'])} "
                     f"| {_share(a['with_majority'])} ({a['majority_units']} units) "
                     f"| {_share(a['gold_accuracy'])} ({a['gold_units']} units) |")
    lines += [
        "", "## Agreement", "",
        f"Level of measurement: {agreement['level']}; {agreement['units']} units labelled by two or more of "
        f"{agreement['annotators']} annotators.", "",
        f"- Krippendorff's alpha: {_figure(agreement['krippendorff_alpha'])}",
        f"- Cohen's kappa (two annotators): {_figure(agreement['cohens_kappa'])}",
        f"- Fleiss' kappa (fixed raters per unit): {_figure(agreement['fleiss_kappa'])}", "",
    ]
    if agreement["pairwise"]:
        lines += ["| annotators | shared units | agreement |", "|---|---|---|"]
        lines += [f"| {p['first']} & {p['second']} | {p['shared']} | {_share(p['agreement'])} |"
                  for p in agreement["pairwise"]]
    return "\n".join(lines) + "\n"
