"""The training corpus: pinned list, licences from metadata, vendored copies, near duplicates, decontamination.

All offline and fast: no `pip download` runs here (a stand-in fails in its place), archives are built in tmp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from dglsp.tools import corpus

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def quiet_filter(heldout: set[str] | frozenset[str] = frozenset()) -> corpus.CorpusFilter:
    """Every filter, with no HumanEval runs and the given held-out hashes (loading the real ones is tested apart)."""
    return corpus.CorpusFilter(heldout_hashes=heldout, eval_runs=set())


def readme_hash(six_lines: list[str]) -> str:
    """data/decontam/README.md, written out again: sha256 of the stripped lines joined by newlines, 16 hex digits."""
    return hashlib.sha256("\n".join(line.strip() for line in six_lines).encode()).hexdigest()[:16]


# ---- held-out windows (data/decontam/README.md) ---------------------------------------------------------------

CODE = [f"    total_{i} = compute_something(value_{i}, factor={i})" for i in range(20)]


def with_noise(lines: list[str]) -> str:
    """The lines with blank lines and comments between them: neither counts toward a window."""
    out = ["def held_out_function(values):"]
    for i, line in enumerate(lines):
        out.append(line + "   ")
        out.append("" if i % 2 else "    # a comment line the hashing skips")
    return "\n".join(out) + "\n"


def test_window_hashes_follow_the_readme():
    text = with_noise(CODE[:8])
    kept = ["def held_out_function(values):"] + [line.strip() for line in CODE[:8]]
    expected = {readme_hash(kept[i:i + 6]) for i in range(len(kept) - 5)}
    assert corpus.heldout_window_hashes(text) == expected
    assert len(expected) == 4


def test_windows_of_only_short_lines_are_skipped():
    short = ["x = 1", "y = 2", "if x:", "pass", "else:", "z = 3", "return"]
    assert corpus.heldout_window_hashes("\n".join(short)) == set()
    one_long = short[:5] + ["a_longer_line_here = 1"] + short[5:]
    assert readme_hash(one_long[:6]) in corpus.heldout_window_hashes("\n".join(one_long))


def test_the_shipped_hash_list_loads():
    hashes = corpus.load_heldout_hashes()
    assert len(hashes) > 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in list(hashes)[:100])


def test_a_file_sharing_two_windows_is_dropped_and_one_window_is_counted():
    kept = ["def held_out_function(values):"] + [line.strip() for line in CODE[:8]]
    two = {readme_hash(kept[0:6]), readme_hash(kept[3:9])}  # both windows of the held-out file
    check = quiet_filter(heldout=two | {"0123456789abcdef"})
    copy = with_noise(CODE[:8])
    assert check.classify("pkg/copy.py", copy) == (None, "heldout_windows")
    # Another file holding only the first window: kept, and counted as a single-window file.
    partial = "\n".join(kept[0:6] + ["    return sum(some_other_thing for _ in range(100))"] * 3) + "\n"
    partial += "\n".join(f"print('unrelated line number {i} of this module')" for i in range(10)) + "\n"
    assert check.admit("pkg/partial.py", partial) == partial
    assert check.heldout_single_window == 1
    assert check.dropped["heldout_windows"] == 1


# ---- near and exact duplicates ------------------------------------------------------------------------------

def test_a_file_with_one_line_changed_is_a_near_duplicate():
    original = (STDLIB / "textwrap.py").read_text()
    lines = original.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if "def dedent" in line) + 1
    edited = "".join(lines[:index] + ["    # an edit in the vendored copy\n    marker = 42\n"] + lines[index + 1:])
    check = quiet_filter()
    assert check.admit("textwrap.py", original) == original
    assert check.classify("copy/textwrap.py", edited) == (None, "near_duplicate")
    trailing_spaces = "".join(line.rstrip("\n") + "  \n" for line in lines)
    assert check.classify("again/textwrap.py", trailing_spaces) == (None, "duplicate")
    different = (STDLIB / "heapq.py").read_text()
    assert check.admit("heapq.py", different) == different
    assert check.dropped["near_duplicate"] == 1 and check.dropped["duplicate"] == 1


def test_minhash_estimates_jaccard():
    index = corpus.NearDuplicateIndex()
    text = (STDLIB / "bisect.py").read_text()
    same = index.signature(text)
    assert (same == index.signature(text)).all()
    other = index.signature((STDLIB / "colorsys.py").read_text())
    assert (same == other).mean() < 0.2


# ---- vendored, generated, data ------------------------------------------------------------------------------

@pytest.mark.parametrize("path, vendored", [
    ("pip/_vendor/rich/console.py", True), ("sklearn/externals/_packaging/version.py", True),
    ("project/third_party/lib/module.py", True), ("pkg/vendored/six.py", True), ("a/site-packages/b/c.py", True),
    ("astropy/extern/ply/lex.py", True), ("pkg/vendors.py", False), ("pkg/vendoring/run.py", False),
    ("_vendor.py", False), ("django/db/models/query.py", False),
])
def test_vendored_paths(path, vendored):
    assert corpus.is_vendored(path) is vendored


def test_vendored_files_are_dropped_before_reading():
    check = quiet_filter()

    def never_read():
        raise AssertionError("a vendored file is not read")

    assert check.classify("pkg/_vendor/six.py", never_read) == (None, "vendored")
    assert check.dropped["vendored"] == 1


def test_data_tables_are_dropped_and_code_is_not():
    table = "TABLE = {\n" + "".join(f"    {i}: 'value {i}', 0x{i:04x}: {i * 1.5},\n" for i in range(80)) + "}\n"
    assert corpus.looks_like_data(table)
    assert not corpus.looks_like_data((STDLIB / "textwrap.py").read_text())
    assert not corpus.looks_like_data("\n".join(f"print({i})" for i in range(10)))  # too few lines to judge
    check = quiet_filter()
    assert check.classify("pkg/table.py", table) == (None, "mostly_data")
    assert check.classify("pkg/tiny.py", "x = 1\n") == (None, "size_or_encoding")
    assert check.classify("pkg/latin1.py", ("# caf\xe9\n" * 100).encode("latin-1")) == (None, "size_or_encoding")


def test_stdlib_includes_its_tests():
    paths = [path for path, _ in corpus.stdlib_files()]
    assert any(p.startswith("test/") for p in paths)
    assert not any("site-packages" in p or "__pycache__" in p or p.startswith("ensurepip/") for p in paths)


# ---- licences from metadata ---------------------------------------------------------------------------------

MIT_TEXT = ("Copyright (c) 2020 Someone\n        Permission is hereby granted, free of charge, to any person\n"
            "        obtaining a copy of this software")


@pytest.mark.parametrize("headers, licence, permissive", [
    ({"License-Expression": "Apache-2.0"}, "Apache-2.0", True),
    ({"License": "BSD-3-Clause", "Classifier": "License :: OSI Approved :: MIT License"}, "BSD-3-Clause", True),
    ({"License": MIT_TEXT}, "MIT", True),
    ({"License": MIT_TEXT, "Classifier": "License :: OSI Approved :: BSD License"}, "BSD License", True),
    ({"Classifier": "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"},
     "GNU General Public License v3 (GPLv3)", False),
    ({"License": "Long text that names the GNU General Public License\n and nothing else"}, "UNKNOWN", False),
    ({}, "UNKNOWN", False),
])
def test_licence_from_metadata_text(headers, licence, permissive):
    text = "Metadata-Version: 2.1\nName: example\nVersion: 1.0\n"
    text += "".join(f"{key}: {value}\n" for key, value in headers.items()) + "\nThe long description.\n"
    assert corpus.license_from_metadata(text) == licence
    assert corpus.is_permissive(licence) is permissive


def make_wheel(directory: Path, name: str, version: str, licence_header: str) -> Path:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    module = "def greet(name):\n    return 'hello ' + name\n" * 10
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", module)
        wheel.writestr(f"{name}/_vendor/six.py", module)
        wheel.writestr(f"{name}-{version}.dist-info/METADATA",
                       f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{licence_header}\n\nReadme.\n")
    return path


def make_sdist(directory: Path, name: str, version: str, licence_header: str) -> Path:
    path = directory / f"{name}-{version}.tar.gz"
    members = {f"{name}-{version}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                              f"{licence_header}\n",
               f"{name}-{version}/tests/test_it.py": "def test_it():\n    assert 1 + 1 == 2\n" * 10}
    with tarfile.open(path, "w:gz") as sdist:
        for member, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    return path


def test_pinned_archives_are_read_with_their_licence_recorded(tmp_path):
    make_wheel(tmp_path, "goodpkg", "1.0", "License-Expression: MIT")
    make_wheel(tmp_path, "badpkg", "2.0", "License-Expression: GPL-3.0-only")
    sdist = make_sdist(tmp_path, "srcpkg", "3.1", "License: BSD-3-Clause")
    assert [p for p, _ in corpus.archive_files(sdist)] == ["tests/test_it.py"]
    assert corpus.license_from_metadata(corpus.archive_metadata(sdist)) == "BSD-3-Clause"
    pins = [corpus.Pin("goodpkg", "1.0"), corpus.Pin("badpkg", "2.0"), corpus.Pin("srcpkg", "3.1", "sdist"),
            corpus.Pin("absent", "0.1")]
    skipped: list[dict] = []
    sources = corpus.sources(tmp_path, pins, download=False, skipped=skipped, log=lambda _: None)
    pinned = {entry.package: (entry, list(files)) for entry, files in sources
              if entry.source.startswith(corpus.SOURCE_PINNED)}
    entry, files = pinned["goodpkg"]
    assert (entry.version, entry.license) == ("1.0", "MIT") and "goodpkg-1.0-py3-none-any.whl" in entry.source
    assert sorted(p for p, _ in files) == ["goodpkg/__init__.py", "goodpkg/_vendor/six.py"]
    assert pinned["srcpkg"][0].license == "BSD-3-Clause" and "badpkg" not in pinned
    reasons = {item["package"]: item for item in skipped}
    assert reasons["badpkg"]["reason"] == "licence" and reasons["badpkg"]["license"] == "GPL-3.0-only"
    assert reasons["badpkg"]["files"] == 2
    assert reasons["absent"]["reason"] == "missing"
    report = corpus.Corpus([], [entry], {"licence": 2}, skipped=skipped)
    manifest = report.manifest()
    assert manifest["packages"][0]["license"] == "MIT" and manifest["filters"]["dropped"] == {"licence": 2}
    assert {"badpkg", "absent"} <= {item["package"] for item in manifest["skipped_packages"]}


def test_fetching_gives_up_when_offline(tmp_path, monkeypatch):
    calls = []

    def offline(pin, directory, form=None):
        calls.append((pin.name, form))
        return "ERROR: Could not find a version that satisfies the requirement"

    monkeypatch.setattr(corpus, "pip_download", offline)
    make_wheel(tmp_path, "cached", "1.0", "License-Expression: MIT")
    pins = [corpus.Pin(f"p{i}", "1.0") for i in range(5)] + [corpus.Pin("cached", "1.0")]
    archives, missing = corpus.fetch_pinned(pins, tmp_path, log=lambda _: None)
    assert list(archives) == [corpus.Pin("cached", "1.0")]  # the cache still serves what it holds
    assert len(calls) == corpus.OFFLINE_AFTER and len(missing) == 5
    assert "offline" in missing[corpus.Pin("p4", "1.0")]


# ---- the pinned list ----------------------------------------------------------------------------------------

def test_the_pinned_list_parses_and_every_entry_is_pinned():
    pins = corpus.read_pins()
    assert len(pins) >= 40
    assert all(pin.version and pin.form in ("wheel", "sdist") for pin in pins)
    assert len({corpus.normalize_name(pin.name) for pin in pins}) == len(pins)
    for raw in corpus.PINNED_PACKAGES.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.+!_-]*( (sdist|wheel))?", line), line


@pytest.mark.parametrize("line", ["django>=5", "django", "django==", "django==5.0 egg", "django == 5.0"])
def test_unpinned_lines_are_rejected(tmp_path, line):
    (tmp_path / "pins.txt").write_text(f"# a comment\nflask==3.0.0\n{line}\n")
    with pytest.raises(ValueError, match="pins.txt:3"):
        corpus.read_pins(tmp_path / "pins.txt")


def test_archives_in_the_cache_match_by_normalized_name(tmp_path):
    wheel = make_wheel(tmp_path, "scikit_learn", "1.5.0", "License-Expression: BSD-3-Clause")
    sdist = make_sdist(tmp_path, "scikit_learn", "1.5.0", "License: BSD-3-Clause")
    assert corpus.find_archive(corpus.Pin("scikit-learn", "1.5.0"), tmp_path) == wheel
    assert corpus.find_archive(corpus.Pin("Scikit.Learn", "1.5.0", "sdist"), tmp_path) == sdist
    assert corpus.find_archive(corpus.Pin("scikit-learn", "1.4.0"), tmp_path) is None


# ---- the cap and the token count ----------------------------------------------------------------------------

def test_no_package_but_the_stdlib_exceeds_its_share():
    sizes = {corpus.STDLIB: 300, "huge": 5_000, "big": 800, **{f"small{i}": 100 for i in range(10)}}
    cap = corpus.package_cap(sizes, 0.10, None)
    total = sum(size if name == corpus.STDLIB else min(size, cap) for name, size in sizes.items())
    assert cap <= 0.10 * total + 1 and cap > 100
    assert corpus.package_cap(sizes, 0.10, 50) == 50 and corpus.package_cap(sizes, None, None) is None
    files = [corpus.SourceFile("huge", f"m{i}.py", "x" * 100) for i in range(50)]
    sampled = corpus._sample_to_cap(files, 1_000)
    assert len(sampled) == 10 and sampled == sorted(sampled, key=lambda f: int(f.path[1:-3]))


def test_tokens_are_counted_in_batches():
    from transformers import AutoTokenizer

    from dglsp.model.loading import EMBEDDED_MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR)
    files = [corpus.SourceFile("a" if i % 2 else "b", f"{name}", (STDLIB / name).read_text())
             for i, name in enumerate(["textwrap.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py"])]
    entries = [corpus.PackageEntry("a", "1", "MIT"), corpus.PackageEntry("b", "1", "MIT")]
    total = corpus.count_tokens(files, entries, tokenizer, batch_size=2)
    expected = [len(ids) for ids in tokenizer([f.text for f in files], add_special_tokens=False)["input_ids"]]
    assert total == sum(expected) == sum(e.tokens for e in entries)
    assert entries[0].tokens == sum(n for i, n in enumerate(expected) if i % 2)


def test_humaneval_problems_are_still_dropped():
    with gzip.open(corpus.HUMAN_EVAL_DIR / "HumanEval-SingleLineInfilling.jsonl.gz", "rt") as handle:
        import json

        row = json.loads(handle.readline())
    text = "# copied into a package\n" + row["prompt"] + row["canonical_solution"] + row["suffix"]
    check = corpus.CorpusFilter(heldout_hashes=frozenset(), eval_runs=corpus.eval_line_runs())
    assert check.classify("pkg/copied.py", text * 2) == (None, "eval_overlap")
