"""sequences/ is the source of every sequence; deploy/manifest.yaml must carry exactly those."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def sources() -> dict:
    found: dict = {}
    for path in sorted((ROOT / "sequences").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert set(doc) == {path.stem}, f"{path.name} must define exactly the sequence {path.stem!r}"
        found.update(doc)
    return found


def test_manifest_sequences_match_sequences_dir():
    manifest = yaml.safe_load((ROOT / "deploy" / "manifest.yaml").read_text())
    package = manifest["project"]["packages"]["radcloud"]
    assert sources(), "sequences/ defines no sequence"
    assert package.get("sequences") == sources()


def test_every_component_is_an_action_of_the_package():
    manifest = yaml.safe_load((ROOT / "deploy" / "manifest.yaml").read_text())
    actions = set(manifest["project"]["packages"]["radcloud"]["actions"])
    for name, seq in sources().items():
        components = [c.strip() for c in seq["actions"].split(",")]
        assert components and set(components) <= actions, (name, set(components) - actions)
