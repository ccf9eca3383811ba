"""Which files count: globs matched from the right, ignored directories skipped when walking."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from portico.sources.file.tree import Tree, matches


def test_patterns_match_from_the_right() -> None:
    assert matches(PurePosixPath("a.csv"), ["*.csv"])
    assert matches(PurePosixPath("deep/er/a.csv"), ["*.csv"])
    assert matches(PurePosixPath("exports/a.csv"), ["exports/*.csv"])
    assert not matches(PurePosixPath("imports/a.csv"), ["exports/*.csv"])
    assert not matches(PurePosixPath("a.csv.part"), ["*.csv"])


def test_walk_follows_the_spec(tmp_path: Path) -> None:
    for name in ("a.csv", "b.txt", ".hidden.csv", "sub/c.csv", ".git/d.csv", "sub/deeper/e.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    deep = Tree(tmp_path, patterns=["*.csv"], ignore_patterns=[".*"], recursive=True)
    flat = Tree(tmp_path, patterns=["*.csv"], ignore_patterns=[".*"], recursive=False)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in deep.files(tmp_path))
    assert names == ["a.csv", "sub/c.csv", "sub/deeper/e.csv"]
    assert [p.name for p in flat.files(tmp_path)] == ["a.csv"]
    assert sorted(deep.directories()) == [tmp_path, tmp_path / "sub", tmp_path / "sub" / "deeper"]
    assert flat.directories() == [tmp_path]
    assert list(deep.files(tmp_path / "missing")) == []


def test_listing_errors_go_to_the_callback_and_vanished_directories_are_skipped(tmp_path: Path) -> None:
    errors: list[Path] = []
    tree = Tree(tmp_path, patterns=["*"], ignore_patterns=[], recursive=True)
    file = tmp_path / "f"
    file.write_text("x")
    assert list(tree.files(file, lambda d, exc: errors.append(d))) == [], "not a directory: skipped"
    assert list(tree.files(tmp_path / "gone", lambda d, exc: errors.append(d))) == []
    assert errors == []
    too_long = tmp_path / ("x" * 300)
    assert list(tree.files(too_long, lambda d, exc: errors.append(d))) == []
    assert errors == [too_long], "any other OSError (here ENAMETOOLONG) is reported"
