"""Numbered output names from the per-prefix counter index (graph.filenames) and the Ray server's
write-back of worker images (loomserver.ray_workers.place_file). No torch."""
import threading

from graph import filenames
from graph.filenames import NameCounter
from loomserver.ray_workers import place_file


def make(counter, folder, prefix="loom_", suffix="_.png", **kw):
    path, f = counter.create(folder, prefix, suffix, **kw)
    with f:
        f.write(b"x")
    return path.name


def listings(monkeypatch):
    calls = []
    real = filenames.highest
    monkeypatch.setattr(filenames, "highest", lambda *a: calls.append(a) or real(*a))
    return calls


def test_names_count_on_from_the_index_without_listing_the_folder(tmp_path, monkeypatch):
    calls = listings(monkeypatch)
    counter = NameCounter(tmp_path / "counters.sqlite3")
    out = tmp_path / "out"
    assert [make(counter, out) for _ in range(3)] == [f"loom_{i:05}_.png" for i in (1, 2, 3)]
    assert make(counter, out / "sub") == "loom_00001_.png"  # per folder
    assert make(counter, out, "cat_") == "cat_00001_.png"  # per prefix
    assert calls == []  # a new prefix costs one stat, never a listing
    again = NameCounter(tmp_path / "counters.sqlite3")  # another process, or a restart
    assert make(again, out) == "loom_00004_.png" and calls == []


def test_files_from_before_the_index_are_found_once(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("loom_00001_.png", "loom_00041_.png", "loom_cat_00500_.png", "loom_00007_.jpg", "loom_x_.png"):
        (out / name).write_bytes(b"old")
    calls = listings(monkeypatch)
    counter = NameCounter(tmp_path / "counters.sqlite3")
    assert [make(counter, out), make(counter, out)] == ["loom_00042_.png", "loom_00043_.png"]
    assert len(calls) == 1


def test_a_name_taken_behind_the_index_is_never_overwritten(tmp_path):
    counter = NameCounter(tmp_path / "counters.sqlite3")
    out = tmp_path / "out"
    assert make(counter, out) == "loom_00001_.png"
    for n in (2, 3, 9):  # another program writes names the index does not know
        (out / f"loom_{n:05}_.png").write_bytes(b"theirs")
    assert make(counter, out) == "loom_00010_.png"
    assert (out / "loom_00002_.png").read_bytes() == b"theirs"


def test_no_upper_limit(tmp_path):
    counter = NameCounter(tmp_path / "counters.sqlite3")
    out = tmp_path / "out"
    out.mkdir()
    (out / "loom_00001_.png").write_bytes(b"")
    (out / "loom_99999_.png").write_bytes(b"")
    assert [make(counter, out) for _ in range(2)] == ["loom_100000_.png", "loom_100001_.png"]


def test_threads_never_get_the_same_name(tmp_path):
    counter = NameCounter(tmp_path / "counters.sqlite3")
    out = tmp_path / "out"
    names = []
    threads = [threading.Thread(target=lambda: names.extend(make(counter, out) for _ in range(20))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == [f"loom_{i:05}_.png" for i in range(1, 81)]


def test_rarely_used_prefixes_are_forgotten_not_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(filenames, "MAX_ROWS", 5)
    counter = NameCounter(tmp_path / "counters.sqlite3")
    out = tmp_path / "out"
    make(counter, out, "keep_")
    for i in range(1000):  # one-off preview prefixes
        make(counter, out, f"preview_{i}_")
    rows = counter._db.execute("SELECT COUNT(*) FROM counters").fetchone()[0]
    assert rows <= 5 + 1
    assert make(counter, out, "keep_") == "keep_00002_.png"  # found again from the folder


def test_the_ray_server_renumbers_worker_images_into_its_folder(tmp_path):
    out = tmp_path / "output"
    assert place_file(tmp_path, out, "ray_00001_.png", b"a") == "ray_00001_.png"
    assert place_file(tmp_path, out, "ray_00001_.png", b"b") == "ray_00002_.png"  # another worker's first image
    assert place_file(tmp_path, out, "pic_p1_4.png", b"c") == "pic_p1_4.png"  # other names are kept
    assert place_file(tmp_path, out, "pic_p1_4.png", b"d") == "pic_p1_4_1.png"
    assert place_file(tmp_path, out, "pic_p1_4.png", b"e") == "pic_p1_4_2.png"
    assert (out / "ray_00002_.png").read_bytes() == b"b" and (out / "pic_p1_4.png").read_bytes() == b"c"
