"""``framepipe processors``: what processors this installation can run (built-ins and
entry points of ``framepipe.processors``), each with its parameters: type, default, meaning.
An entry point that fails to load is listed with its error, so a broken lab package shows
here rather than at a worker's start."""

from __future__ import annotations

import json

from framepipe.processing.registry import ENTRY_POINT_GROUP, installed


def print_processors(as_json: bool = False) -> None:
    found = installed()
    if as_json:
        print(json.dumps([p.__dict__ for p in found], indent=2))
        return
    for p in found:
        print(f"{p.name}  ({p.source})")
        if p.error:
            print(f"    cannot load: {p.error}")
            continue
        if p.summary:
            print(f"    {p.summary}")
        for param in p.params:
            default = "required" if param["required"] else f"default {json.dumps(param['default'])}"
            text = f"  {param['description']}" if param["description"] else ""
            print(f"    {param['name']}: {param['type']}, {default}{text}")
        if not p.params:
            print("    (no parameters)")
    print(f"\nalso: any package.module:Class; entry point group {ENTRY_POINT_GROUP} (docs/processors.md)")
