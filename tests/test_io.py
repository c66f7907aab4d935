"""vrft.io: atomic writes leave nothing on failure; manifests catch every change."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from vrft.io import (
    ManifestError,
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    verify_manifest,
    write_manifest,
)


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    monkeypatch.undo()
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_directory_success_failure_and_clobbering(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
        (tmp / "a").write_text("1")
        assert not final.exists()
    assert (final / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]

    with pytest.raises(FileExistsError):
        with atomic_directory(final):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(final, overwrite=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["a"]  # a failed overwrite keeps the old one
    with atomic_directory(final, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == [
        "out"
    ]


def _tree(root):
    (root / "d" / "e").mkdir(parents=True)
    (root / "z.bin").write_bytes(bytes(range(256)) * 40)
    (root / "d" / "a.txt").write_text("alpha\n")
    (root / "d" / "e" / "b.json").write_text('{"b": 1}')


def test_manifest_is_deterministic_and_lists_every_file(tmp_path):
    for name in ("one", "two"):
        _tree(tmp_path / name)
        write_manifest(tmp_path / name, {"seed": 3, "config": {"b": 1, "a": [2, 1]}})
    first = (tmp_path / "one" / "manifest.json").read_bytes()
    assert first == (tmp_path / "two" / "manifest.json").read_bytes()
    manifest = json.loads(first)
    assert list(manifest["files"]) == ["d/a.txt", "d/e/b.json", "z.bin"]
    assert manifest["files"]["z.bin"] == {"sha256": sha256_file(tmp_path / "one" / "z.bin"), "size": 10240}
    assert verify_manifest(tmp_path / "one")["seed"] == 3
    with pytest.raises(ValueError, match="reserved"):
        write_manifest(tmp_path / "one", {"files": {}})


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: _flip(r / "z.bin", 1000), "file 'z.bin': SHA-256 differs"),
        (
            lambda r: _truncate(r / "d" / "e" / "b.json"),
            "file 'd/e/b.json': size differs (recorded 8, found 4)",
        ),
        (lambda r: (r / "d" / "a.txt").unlink(), "file 'd/a.txt': missing"),
        (lambda r: (r / "d" / "new.txt").write_text("x"), "file 'd/new.txt': not in the manifest"),
    ],
)
def test_verify_manifest_names_the_changed_file(tmp_path, damage, message):
    _tree(tmp_path)
    write_manifest(tmp_path)
    damage(tmp_path)
    with pytest.raises(ManifestError) as info:
        verify_manifest(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'manifest.json'}: {message}")


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:4])


def test_verify_manifest_rejects_a_missing_or_broken_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json: missing"):
        verify_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        verify_manifest(tmp_path)


# -- issue 14: outputs overlapping inputs, files replaced, leftovers of killed builds ------------


@pytest.mark.timeout(30)
def test_check_output_apart(tmp_path):
    from vrft.io import OutputOverlapError, check_output_apart

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "ann.json").write_text("{}")
    inputs = {"images": data / "images", "annotations": data / "ann.json", "unused": ""}
    check_output_apart(tmp_path / "out", inputs)
    check_output_apart(data / "out", inputs)  # next to the inputs is fine
    for output, relation in (
        (data / "images", "is"),
        (data / "ann.json", "is"),
        (data, "contains"),
        (tmp_path, "contains"),
        (data / "images" / "x", "is inside"),
        (data / "images" / ".." / "images", "is"),
    ):
        with pytest.raises(OutputOverlapError, match=f"output {relation} the "):
            check_output_apart(output, inputs)
    (tmp_path / "link").symlink_to(data / "images")
    with pytest.raises(OutputOverlapError, match="output is the images"):
        check_output_apart(tmp_path / "link", inputs)


@pytest.mark.timeout(120)
def test_atomic_directory_overwrites_a_file_or_symlink_without_leaving_it(tmp_path):
    (tmp_path / "out").write_text("old")
    with atomic_directory(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "a").write_text("new")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with atomic_directory(tmp_path / "link", overwrite=True) as tmp:
        (tmp / "a").write_text("new")
    assert (tmp_path / "out" / "a").read_text() == "new" and (tmp_path / "link" / "a").read_text() == "new"
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "elsewhere").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link", "out"]


@pytest.mark.timeout(120)
def test_leftovers_of_a_killed_build_are_removed_by_the_next_one(tmp_path):
    import subprocess
    import sys

    # A process that dies (SIGKILL: no cleanup runs) in the middle of building tmp_path/"out".
    script = (
        "import os, signal, sys\nfrom vrft.io import atomic_directory\n"
        "with atomic_directory(sys.argv[1]) as tmp:\n"
        "    (tmp / 'half').write_text('x')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], timeout=120)
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".out.building-")
    host = stale[0][len(".out.building-") :].rsplit("-", 2)[0]
    live = tmp_path / f".out.building-{host}-{os.getpid()}-abc123"  # this process is alive: not touched
    other_host = tmp_path / ".out.building-another-node-999999999-abc123"  # its pids mean nothing here
    live.mkdir()
    other_host.mkdir()
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, "out"])
