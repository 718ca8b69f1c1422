"""Small builders for tests: real rows in a real SQLite file, no mocks."""
from __future__ import annotations

from annotation.services.projects import ProjectSettings, create_project, find_project
from annotation.services.prompts import add_text_prompts
from storage.db import Database, transaction
from storage.models import Item, Prompt, Response


def make_project(db: Database, name: str = "p", mode: str = "pairwise", k: int = 2, overlap: int = 1,
                 prompts: int = 0) -> str:
    create_project(db, ProjectSettings(name=name, mode=mode, k=k, overlap=overlap, model="test-model"))
    if prompts:
        add_text_prompts(db, name, "\n".join(f"prompt number {i}" for i in range(prompts)))
    return name


def make_items(db: Database, project: str, n: int, k: int | None = None) -> list[int]:
    """Create n ready items with k canned responses each (as the generator would store them)."""
    ids = []
    with transaction(db) as s:
        p = find_project(s, project)
        k = k or p.k
        existing = s.query(Prompt).filter_by(project_id=p.id).count()
        for i in range(n):
            prompt = Prompt(project_id=p.id, messages=[{"role": "user", "content": f"q{existing + i}"}],
                            is_chat=False, content_hash=f"h{existing + i}", source="test", meta={})
            item = Item(project_id=p.id, prompt=prompt)
            for j in range(k):
                item.responses.append(Response(prompt=prompt, position=j, text=f"answer {i}.{j}", model="test-model",
                                               sampling={"temperature": 0.8}, seed=i))
            s.add(item)
            s.flush()
            ids.append(item.id)
    return ids
