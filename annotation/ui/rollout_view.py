"""The newest rollouts of an online RL job (PPO, GRPO) as a table: prompt, sampled answer, reward
and advantage, so a user watching the job sees reward hacking as it happens."""
from __future__ import annotations

from html import escape
from typing import Any

#: Longest answer shown in full; a longer one is cut (the rollout log keeps it whole).
ANSWER_CHARS = 400


def rollout_html(rows: list[dict[str, Any]]) -> str:
    """An HTML table of the logged completions, or nothing for a job that logs none."""
    if not rows:
        return ""
    body = "".join(
        f'<tr><td>{escape(_cut(r["prompt"]))}</td><td class="ps-answer">{escape(_cut(r["completion"]))}</td>'
        f'<td class="ps-reward">{r["reward"]:.3f}</td><td class="ps-advantage">{_advantage(r)}</td>'
        f'<td>{escape(r.get("finish_reason") or "")}</td></tr>'
        for r in rows)
    return ('<div class="ps-rollouts"><div>Latest rollout: sampled answers with their rewards and advantages</div>'
            '<table><thead><tr><th>prompt</th><th>answer</th><th>reward</th><th>advantage</th><th>ended by</th>'
            f'</tr></thead><tbody>{body}</tbody></table></div>')


def _advantage(row: dict[str, Any]) -> str:
    value = row.get("advantage")  # logs written before advantages were logged lack it
    return "" if value is None else f"{value:+.3f}"


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS - 1] + "…"
