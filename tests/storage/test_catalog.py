"""Catalog on its own: meta, transactions and snapshots, records in chunks, tombstones and renumbering,
checksummed ranges, tenants and their key prefixes, field values, and the integrity / consistency checks."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from vecpack.errors import CorruptData
from vecpack.storage.catalog import _CHUNK, BUSY_TIMEOUT_S, SCHEMA_VERSION, Catalog

META = {"dim": 8, "metric": "ip", "ratio": 0.5, "exact": False, "spec": {"m": [1, 2.5, None, True], "name": "x"}}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "catalog.sqlite"


@pytest.fixture
def opened():
    """Every Catalog a test opens, closed at the end."""
    catalogs: list[Catalog] = []
    yield catalogs
    for catalog in catalogs:
        catalog.close()


@pytest.fixture
def open_catalog(path, opened):
    """Open (or create) a Catalog on the test's file; closed after the test."""

    def make(**kwargs) -> Catalog:
        catalog = Catalog(path, **kwargs)
        opened.append(catalog)
        return catalog

    return make


@pytest.fixture
def catalog(open_catalog):
    return open_catalog(create=True, meta=META)


def key(i: int) -> str:
    return f"id{i}"


def meta_of(i: int) -> str | None:
    return None if i % 3 == 0 else json.dumps({"i": i})


def fill(catalog: Catalog, n: int, row0: int = 0) -> None:
    """Records for rows row0 .. row0+n-1: id ``key(row)``, metadata ``meta_of(row)``."""
    rows = range(row0, row0 + n)
    with catalog.transaction():
        catalog.insert_records(row0, [key(r) for r in rows], [meta_of(r) for r in rows])


# -- meta -------------------------------------------------------------------------------------------------
def test_meta_given_at_creation_reads_back_after_reopen(catalog, open_catalog):
    catalog.close()
    again = open_catalog()
    assert again.all_meta() == {"schema": SCHEMA_VERSION, **META}
    assert again.get_meta("dim") == 8 and type(again.get_meta("dim")) is int
    assert again.get_meta("exact") is False
    assert again.get_meta("spec") == META["spec"]
    assert again.get_meta("metric", "l2") == "ip"  # a stored value wins over the default


def test_get_meta_default_only_for_missing_keys(catalog):
    assert catalog.get_meta("absent") is None
    assert catalog.get_meta("absent", 7) == 7
    catalog.set_meta(nothing=None)  # a stored JSON null is a value, not a missing key
    assert catalog.get_meta("nothing", "default") is None


def test_set_meta_upserts_and_persists(catalog, open_catalog):
    catalog.set_meta(dim=9, extra=[1, "a", {"b": None}])
    assert catalog.get_meta("dim") == 9
    assert catalog.conn.execute("SELECT count(*) FROM meta WHERE key = 'dim'").fetchone()[0] == 1
    again = open_catalog()
    assert again.get_meta("dim") == 9 and again.get_meta("extra") == [1, "a", {"b": None}]
    assert again.all_meta() == {"schema": SCHEMA_VERSION, **META, "dim": 9, "extra": [1, "a", {"b": None}]}


def test_missing_file_is_corrupt_and_not_created(path):
    with pytest.raises(CorruptData, match="missing"):
        Catalog(path)
    assert not path.exists()


def test_wrong_schema_version_is_corrupt(catalog, open_catalog):
    catalog.set_meta(schema=SCHEMA_VERSION + 1)
    catalog.close()
    with pytest.raises(CorruptData, match=f"schema {SCHEMA_VERSION + 1}"):
        open_catalog()


@pytest.mark.parametrize("content", [b"this is not an SQLite database at all" * 200, None], ids=["garbage", "empty"])
def test_a_file_that_is_not_a_catalog_is_corrupt(path, content):
    if content is None:  # a valid SQLite file without the catalog's tables
        sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.close()
    else:
        path.write_bytes(content)
    with pytest.raises(CorruptData, match="not a readable vecpack catalog"):
        Catalog(path)


# -- transactions and snapshots ----------------------------------------------------------------------------
def test_transaction_commits_for_other_connections(catalog, open_catalog):
    other = open_catalog()
    with catalog.transaction():
        catalog.insert_records(0, ["a", "b"], [None, "{}"])
        catalog.set_meta(n_rows=2)
    assert not catalog.conn.in_transaction
    assert other.count() == 2 and other.get_meta("n_rows") == 2


def test_transaction_rolls_back_on_exception(catalog, open_catalog):
    fill(catalog, 3)
    with pytest.raises(RuntimeError, match="boom"), catalog.transaction():
        catalog.insert_records(3, ["x", "y"], [None, None])
        catalog.delete_rows([0])
        catalog.set_meta(dim=99)
        raise RuntimeError("boom")
    assert not catalog.conn.in_transaction
    for seen in (catalog, open_catalog()):
        assert seen.count() == 3 and seen.rows_of(["x", "y", key(0)]) == {key(0): 0}
        assert seen.tombstones().size == 0 and seen.get_meta("dim") == 8


def test_transaction_takes_the_write_lock_up_front(catalog, open_catalog):
    other = open_catalog()
    other.conn.execute("PRAGMA busy_timeout = 0")
    with catalog.transaction():  # no statement yet: BEGIN IMMEDIATE alone holds the lock
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.conn.execute("BEGIN IMMEDIATE")
    with other.transaction():  # released at commit
        other.set_meta(after=1)
    assert catalog.get_meta("after") == 1


def test_snapshot_hides_other_commits_until_it_ends(catalog, open_catalog):
    fill(catalog, 2)
    writer = open_catalog()
    with catalog.snapshot():
        assert catalog.count() == 2  # the first read fixes the snapshot
        fill(writer, 3, row0=2)
        writer.set_meta(dim=16)
        assert catalog.count() == 2 and catalog.get_meta("dim") == 8
        assert catalog.records_by_row([2, 3, 4]) == {}
    assert catalog.count() == 5 and catalog.get_meta("dim") == 16
    assert not catalog.conn.in_transaction


def test_snapshot_ends_on_exception(catalog):
    with pytest.raises(KeyError), catalog.snapshot():
        catalog.count()
        raise KeyError("x")
    assert not catalog.conn.in_transaction


def test_data_version_changes_on_another_connections_commit_only(catalog, open_catalog):
    writer = open_catalog()
    before = catalog.data_version()
    catalog.set_meta(own=1)  # this connection's own commit
    assert catalog.data_version() == before
    writer.set_meta(other=1)
    after = catalog.data_version()
    assert after != before
    assert catalog.data_version() == after  # stable while nothing else commits


def test_snapshot_inside_a_transaction_adds_nothing(catalog, open_catalog):
    with catalog.transaction():
        catalog.set_meta(a=1)
        with catalog.snapshot():  # must neither BEGIN (an error here) nor COMMIT the outer transaction
            assert catalog.get_meta("a") == 1
        assert catalog.conn.in_transaction
        catalog.set_meta(b=2)
    assert open_catalog().all_meta().keys() >= {"a", "b"}

    with pytest.raises(RuntimeError), catalog.transaction():
        catalog.set_meta(c=3)
        with catalog.snapshot():
            pass
        raise RuntimeError("roll back")
    assert catalog.get_meta("c") is None  # the nested snapshot did not commit c


# -- records -----------------------------------------------------------------------------------------------
def test_records_across_several_in_chunks(catalog):
    n, row0 = 1_234, 10
    assert n > 2 * _CHUNK  # three IN (...) chunks
    fill(catalog, n, row0)
    rows = range(row0, row0 + n)
    ids = [key(r) for r in rows]
    missing = ["nope", key(row0 + n), key(0), ""]
    assert catalog.count() == n

    assert catalog.rows_of(ids + missing) == {key(r): r for r in rows}
    assert catalog.rows_of(missing) == {}
    assert catalog.rows_of([]) == {}

    by_id = catalog.records_by_id(missing[:2] + ids[::-1] + missing[2:])
    assert by_id == {key(r): (r, meta_of(r)) for r in rows}

    asked = list(range(0, row0 + n + 50))  # rows below row0 and past the end do not exist
    assert catalog.records_by_row(asked) == {r: (key(r), meta_of(r)) for r in rows}
    assert catalog.records_by_row([]) == {}
    catalog.set_meta(vectors_file="vectors-7.f32")
    for wanted in ([], [row0], asked[:40], asked):  # one statement up to _CHUNK rows, a snapshot past it
        log, found = catalog.records_at(wanted, "vectors_file")
        assert log == "vectors-7.f32"
        assert found == catalog.records_by_row(wanted)
    assert catalog.records_at([row0], "no_such_key") == (None, {row0: (key(row0), meta_of(row0))})


def test_insert_records_refuses_a_duplicate_id(catalog):
    fill(catalog, 3)
    with pytest.raises(sqlite3.IntegrityError), catalog.transaction():
        catalog.insert_records(3, ["new", key(1)], [None, None])
    assert catalog.count() == 3 and catalog.rows_of(["new"]) == {}


def test_delete_rows_moves_rows_to_tombstones(catalog):
    fill(catalog, 10)
    with catalog.transaction():
        catalog.delete_rows([5, 2, 7])
    dead = catalog.tombstones()
    assert dead.dtype == np.int64 and sorted(dead.tolist()) == [2, 5, 7]
    assert catalog.count() == 7
    assert catalog.rows_of([key(r) for r in range(10)]) == {key(r): r for r in range(10) if r not in (2, 5, 7)}
    assert set(catalog.records_by_row(list(range(10)))) == set(range(10)) - {2, 5, 7}


@pytest.mark.parametrize("dead", [[0, 3, 4, 8], [7, 8, 9], [1], []])
def test_renumber_maps_kept_rows_to_a_dense_range(catalog, dead):
    fill(catalog, 10)
    with catalog.transaction():
        catalog.delete_rows(dead)
    keep = np.array([r for r in range(10) if r not in dead], dtype=np.int64)
    with catalog.transaction():
        catalog.renumber(keep)
    assert catalog.tombstones().size == 0
    assert catalog.count() == keep.size
    expected = {new: (key(int(old)), meta_of(int(old))) for new, old in enumerate(keep)}
    assert catalog.records_by_row(list(range(10))) == expected
    assert catalog.rows_of([key(int(old)) for old in keep]) == {key(int(old)): new for new, old in enumerate(keep)}


# -- checksummed ranges ------------------------------------------------------------------------------------
def test_ranges_ascending_last_and_cleared(catalog):
    catalog.add_range("batches", 10, 5, 0xFFFFFFFF)  # the largest crc32 survives the round trip
    catalog.add_range("batches", 0, 10, 123)
    catalog.add_range("batches", 15, 1, 7)
    assert catalog.ranges("batches") == [(0, 10, 123), (10, 5, 0xFFFFFFFF), (15, 1, 7)]
    assert catalog.last_range("batches") == (15, 1, 7)
    assert catalog.ranges("segments") == [] and catalog.last_range("segments") is None

    catalog.add_range("batches", 15, 3, 8)  # the same start replaces the range (a rewritten tail)
    assert catalog.ranges("batches")[-1] == (15, 3, 8) and len(catalog.ranges("batches")) == 3

    catalog.add_range("segments", 0, 4, 44)
    catalog.clear_ranges("batches")
    assert catalog.ranges("batches") == [] and catalog.last_range("batches") is None
    assert catalog.ranges("segments") == [(0, 4, 44)]
    catalog.add_range("batches", 0, 1, 1)
    catalog.clear_ranges("batches", "segments")
    assert catalog.ranges("batches") == [] and catalog.ranges("segments") == []


def test_range_methods_refuse_other_tables(catalog):
    fill(catalog, 4)
    with pytest.raises(ValueError, match="not a table of checksummed ranges"):
        catalog.add_range("records", 0, 1, 1)
    with pytest.raises(ValueError, match="not a table of checksummed ranges"):
        catalog.ranges("tombstones")
    with pytest.raises(ValueError, match="not a table of checksummed ranges"):
        catalog.last_range("meta")
    with pytest.raises(ValueError, match="not a table of checksummed ranges"):
        catalog.clear_ranges("segments", "records")
    assert catalog.count() == 4  # nothing deleted from records


# -- tenants -----------------------------------------------------------------------------------------------
def test_tenants_register_toggle_and_remove(catalog):
    alice, bob = catalog.add_tenant("alice"), catalog.add_tenant("bob")
    assert isinstance(alice, int) and isinstance(bob, int) and alice != bob
    assert catalog.tenant("alice") == (alice, True) and catalog.tenant("carol") is None
    assert catalog.tenants() == {"alice": (alice, True), "bob": (bob, True)}

    catalog.set_tenant_active(bob, False)
    code, active = catalog.tenant("bob")
    assert code == bob and active is False
    catalog.set_tenant_active(bob, True)
    assert catalog.tenant("bob") == (bob, True)

    with pytest.raises(sqlite3.IntegrityError):
        catalog.add_tenant("alice")
    catalog.remove_tenant(alice)
    assert catalog.tenant("alice") is None
    assert catalog.tenants() == {"bob": (bob, True)}


@pytest.fixture
def tenant_rows(catalog):
    """Records keyed by tenant code (1, 2, 10, 11) plus keys without a tenant; row -> key."""
    keys = ["1\x1fa", "2\x1fb", "10\x1fc", "1\x1fd", "11\x1fe", "plain", "1x", "1", "1\x1f", "12\x1f1\x1fz"]
    with catalog.transaction():
        catalog.insert_records(0, keys, [None] * len(keys))
    return dict(enumerate(keys))


def test_rows_with_prefix_matches_only_that_tenant(catalog, tenant_rows):
    for code in (1, 2, 10, 11, 12, 3):
        prefix = f"{code}\x1f"
        expected = sorted(r for r, k in tenant_rows.items() if k.startswith(prefix))
        assert sorted(catalog.rows_with_prefix(prefix)) == expected, code
    assert sorted(catalog.rows_with_prefix("1\x1f")) == [0, 3, 8]


def test_tenant_of_rows_over_a_row_range(catalog, tenant_rows):
    rows, codes = catalog.tenant_of_rows(0, len(tenant_rows))
    assert rows.dtype == np.int64 and codes.dtype == np.int32
    assert sorted(zip(rows.tolist(), codes.tolist(), strict=True)) == [
        (0, 1), (1, 2), (2, 10), (3, 1), (4, 11), (8, 1), (9, 12)]
    rows, codes = catalog.tenant_of_rows(2, 5)  # row1 is exclusive
    assert sorted(zip(rows.tolist(), codes.tolist(), strict=True)) == [(2, 10), (3, 1), (4, 11)]
    rows, codes = catalog.tenant_of_rows(5, 8)  # keys without a tenant only
    assert rows.size == 0 and codes.size == 0


# -- field values ------------------------------------------------------------------------------------------
FIELD_DOCS = [
    {"a": {"b": 1}, "t": True, "s": "x", "arr": [1, "2", None], "obj": {"k": "v"}, "n": None, "f": 1.5,
     "big": 2**62, "x.y": 5, "x": {"y": 6}},
    {"a": {"b": "str"}, "t": False, "s": ""},
    {"a": 3},
    None,
    {"a": {"b": [1, {"c": 2}]}},
    {"a": {"b": {"c": None}}},
    {"a": {"b": True}},
    {"a": {"b": 7}},
]


@pytest.fixture
def field_catalog(catalog):
    with catalog.transaction():
        catalog.insert_records(0, [key(r) for r in range(len(FIELD_DOCS))],
                               [None if d is None else json.dumps(d) for d in FIELD_DOCS])
    return catalog


def test_field_values_of_every_json_kind(field_catalog):
    n = len(FIELD_DOCS)
    got = field_catalog.field_values(["a", "b"], 0, n)
    assert got == [(0, 1), (1, "str"), (4, [1, {"c": 2}]), (5, {"c": None}), (6, True), (7, 7)]
    assert type(got[0][1]) is int and type(got[4][1]) is bool  # true is a bool, not 1

    flags = field_catalog.field_values(["t"], 0, n)
    assert flags == [(0, True), (1, False)] and all(type(v) is bool for _, v in flags)
    assert field_catalog.field_values(["s"], 0, n) == [(0, "x"), (1, "")]
    assert field_catalog.field_values(["arr"], 0, n) == [(0, [1, "2", None])]
    assert field_catalog.field_values(["obj"], 0, n) == [(0, {"k": "v"})]
    assert field_catalog.field_values(["n"], 0, n) == [(0, None)]  # a null is present, unlike a missing field
    assert field_catalog.field_values(["f"], 0, n) == [(0, 1.5)]
    assert field_catalog.field_values(["big"], 0, n) == [(0, 2**62)]
    assert field_catalog.field_values(["x.y"], 0, n) == [(0, 5)]  # a dot inside one key is not a path step
    assert field_catalog.field_values(["x", "y"], 0, n) == [(0, 6)]
    assert field_catalog.field_values(["absent"], 0, n) == []
    assert field_catalog.field_values(["a"], 0, n)[1:3] == [(1, {"b": "str"}), (2, 3)]


def test_field_values_skips_rows_outside_the_range_and_deleted_rows(field_catalog):
    assert field_catalog.field_values(["a", "b"], 1, 5) == [(1, "str"), (4, [1, {"c": 2}])]
    assert field_catalog.field_values(["a", "b"], 3, 3) == []
    with field_catalog.transaction():
        field_catalog.delete_rows([0, 6])
    assert [r for r, _ in field_catalog.field_values(["a", "b"], 0, len(FIELD_DOCS))] == [1, 4, 5, 7]


# -- integrity and consistency -----------------------------------------------------------------------------
def test_integrity_problems_empty_on_a_sound_file(catalog):
    assert catalog.integrity_problems() == []
    fill(catalog, 1_000)
    with catalog.transaction():
        catalog.delete_rows(list(range(0, 1_000, 7)))
    assert catalog.integrity_problems() == []


N_ROWS, SEALED = 10, 8


@pytest.fixture
def consistent(catalog):
    """A multi-tenant catalog whose records, tombstones and ranges agree with n_rows 10, sealed_rows 8."""
    code = catalog.add_tenant("t")
    with catalog.transaction():
        catalog.insert_records(0, [f"{code}\x1f{r}" for r in range(N_ROWS)], ['{"r": 1}'] * N_ROWS)
        catalog.delete_rows([3, 4])
        catalog.add_range("batches", 0, 6, 1)
        catalog.add_range("batches", 6, 4, 2)
        catalog.add_range("segments", 0, 8, 3)
    return catalog


def problems(catalog: Catalog, multi_tenant: bool = True) -> list[str]:
    return catalog.consistency_problems(N_ROWS, SEALED, multi_tenant)


def test_consistent_catalog_has_no_problems(consistent, tmp_path):
    assert problems(consistent) == [] and problems(consistent, multi_tenant=False) == []
    empty = Catalog(tmp_path / "empty.sqlite", create=True)
    try:
        assert empty.consistency_problems(0, 0, True) == []
    finally:
        empty.close()


def test_records_and_tombstones_not_accounting_for_n_rows(consistent):
    assert problems(consistent) == []
    assert len(consistent.consistency_problems(N_ROWS + 1, SEALED, True)) == 2  # and the batches end short
    consistent.conn.execute("DELETE FROM records WHERE row = 0")  # row 0 is neither record nor tombstone
    (found,) = problems(consistent)
    assert "7 records and 2 tombstones" in found and f"the {N_ROWS} rows" in found


def test_a_row_both_record_and_tombstone(consistent):
    consistent.conn.execute("DELETE FROM tombstones WHERE row = 4")
    consistent.conn.execute("INSERT INTO tombstones (row) VALUES (5)")  # counts still add up to n_rows
    (found,) = problems(consistent)
    assert "1 rows both" in found


@pytest.mark.parametrize("row", [N_ROWS, -1])
def test_a_record_outside_the_rows(consistent, row):
    consistent.conn.execute("UPDATE records SET row = ? WHERE row = 9", (row,))
    (found,) = problems(consistent)
    assert "do not account" in found


def test_a_tombstone_below_row_zero(consistent):
    consistent.conn.execute("UPDATE tombstones SET row = -1 WHERE row = 4")  # row 4 is now unaccounted for
    assert problems(consistent) != []


@pytest.mark.parametrize("table", ["batches", "segments"])
def test_a_gap_in_the_checksummed_ranges(consistent, table):
    consistent.conn.execute(f"UPDATE {table} SET row0 = row0 + 1 WHERE row0 = (SELECT max(row0) FROM {table})")
    (found,) = problems(consistent)
    expected_start = 7 if table == "batches" else 1
    assert found.startswith(f"{table}: a checksummed range starts at row {expected_start}, expected")


@pytest.mark.parametrize("table", ["batches", "segments"])
def test_checksummed_ranges_ending_short(consistent, table):
    consistent.conn.execute(f"UPDATE {table} SET n = n - 1 WHERE row0 = (SELECT max(row0) FROM {table})")
    (found,) = problems(consistent)
    rows = N_ROWS if table == "batches" else SEALED
    assert found == f"{table}: checksummed ranges end at row {rows - 1}, expected {rows}"


def test_metadata_that_is_not_json(consistent):
    consistent.conn.execute("UPDATE records SET metadata = '{not json' WHERE row IN (0, 5)")
    (found,) = problems(consistent)
    assert found == "2 records hold metadata that is not JSON"


def test_keys_of_no_existing_tenant(consistent):
    consistent.conn.execute("UPDATE records SET id = '99\x1fx' WHERE row = 0")  # code 99 does not exist
    consistent.conn.execute("UPDATE records SET id = 'no-prefix' WHERE row = 1")
    (found,) = problems(consistent)
    assert found == "2 records belong to no tenant"
    assert problems(consistent, multi_tenant=False) == []  # only checked for multi-tenant collections


def test_removed_tenant_leaves_its_keys_orphaned(consistent):
    consistent.remove_tenant(consistent.tenant("t")[0])
    assert problems(consistent) == [f"{N_ROWS - 2} records belong to no tenant"]


# -- checkpoint --------------------------------------------------------------------------------------------
def wal_size(path) -> int:
    return os.path.getsize(f"{path}-wal")


def test_checkpoint_truncates_the_log(catalog, path):
    fill(catalog, 500)
    assert wal_size(path) > 0
    catalog.checkpoint()
    assert wal_size(path) == 0
    assert catalog.count() == 500  # folded into the database file, not lost
    assert catalog.conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT_S * 1000)


def test_checkpoint_leaves_the_log_to_a_reader_on_an_older_snapshot(catalog, open_catalog, path):
    reader = open_catalog()
    fill(catalog, 10)
    with reader.snapshot():
        assert reader.count() == 10
        fill(catalog, 10, row0=10)  # past the reader's snapshot
        catalog.checkpoint(wait_s=0.05)  # gives up waiting: no error
        assert wal_size(path) > 0
        assert reader.count() == 10
    assert catalog.conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT_S * 1000)
    catalog.checkpoint()
    assert wal_size(path) == 0 and reader.count() == 20
