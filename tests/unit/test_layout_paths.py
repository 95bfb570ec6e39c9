"""Which paths of an NFT1000 layout folder are files of the layout, and which are unsafe."""

from __future__ import annotations

import pytest

from tasks.export.layout_import import (
    ImportNote,
    LayoutFile,
    parse_layout_path,
)


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "Moonbirds/images/../x",
        "Moonbirds/./images/Moonbirds_1.png",
        "/Moonbirds/images/Moonbirds_1.png",
        "Moonbirds//images/Moonbirds_1.png",
        "Moonbirds/images/Moonbirds_1.png/",
        "Moonbirds\\images\\Moonbirds_1.png",
        "Moonbirds/images/Moonbirds_1\n.png",
        "Moonbirds/images/Moonbirds_1.png\x00",
    ],
)
def test_paths_that_could_climb_or_confuse_are_unsafe(path: str) -> None:
    note = parse_layout_path(path)
    assert isinstance(note, ImportNote)
    assert note.reason == "unsafe_name"
    assert note.path.isprintable()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Moonbirds/images/Moonbirds_12.png", LayoutFile("Moonbirds", "images", 12)),
        ("Moonbirds/images/Moonbirds_12.PNG", LayoutFile("Moonbirds", "images", 12)),
        ("Moon_birds/metadata/Moon_birds_0.json", LayoutFile("Moon_birds", "metadata", 0)),
        ("A b/captions/A b_7.txt", LayoutFile("A b", "captions", 7)),
        ("X/metadata_dashboard.json", LayoutFile("X", "dashboard", None)),
        (f"X/prompts/X_{2**256 - 1}.txt", LayoutFile("X", "prompts", 2**256 - 1)),
        (f"X/prompts/X_{2**256}.txt", None),
        ("X/images/X_.png", None),
        ("X/images/X_abc.png", None),
        ("X/images/X_007.png", None),
        ("X/images/X_-1.png", None),
        ("X/images/X_1.5.png", None),
        ("X/images/Y_1.png", None),
        ("X/images/X_1.json", None),
        ("X/metadata/X_1.png", None),
        ("X/other/X_1.png", None),
        ("X/X_1.json", None),
        ("X/images/deep/X_1.png", None),
        ("README.md", None),
    ],
)
def test_layout_paths(path: str, expected: LayoutFile | None) -> None:
    found = parse_layout_path(path)
    if expected is None:
        assert isinstance(found, ImportNote)
        assert (found.path, found.reason) == (path, "unexpected_file")
    else:
        assert found == expected
