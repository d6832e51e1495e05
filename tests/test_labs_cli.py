"""Lab profiles as operators use them (issue 18): ``fabnode lab set`` with a town's name looked
up offline and confirmed, ``fabnode lab`` and ``fabnode labs``, across two real daemons on
127.0.0.1 and a USB stick's CAR file; careless or hostile input refused in one line with the
profile unchanged; a daemon re-signing its lab record keeps the profile; and the labs page with
its map, in Chromium."""

from __future__ import annotations

import json

import pytest

from conftest import Cli, run_on_terminal
from daemons import Daemon, wait_until


@pytest.fixture(scope="module")
def two_labs(tmp_path_factory):
    """Nakuru sets its profile from coordinates, Nairobi from its town's name; both run daemons,
    Nairobi's bootstrapping to Nakuru's."""
    tmp = tmp_path_factory.mktemp("labs")
    nakuru, nairobi = Cli(tmp / "nakuru"), Cli(tmp / "nairobi")
    nakuru.run("init", "--name", "Nakuru Makers")
    nakuru.run("lab", "set", "--lat", "-0.30719", "--lon", "36.07225", "--bioregion", "Rift Valley",
               "--process", "FDM", "--process", "TIG welding", "--material", "PLA", "--language", "sw",
               "--machine", "welder; ; MIG 200 A", "--taking-requests", "yes")
    # renamed by hand in config.toml: the daemon renews the lab record when it starts
    config = nakuru.home / "config.toml"
    config.write_text(config.read_text().replace('name = "Nakuru Makers"', 'name = "Fab Lab Nakuru"'))
    nairobi.run("init", "--name", "Nairobi Makers")
    set_by_name = nairobi.run("lab", "set", "--place", "Nairobi", "--yes", "--process", "laser cutter",
                              "--process", "basket weaving")
    a = Daemon(nakuru)
    b = Daemon(nairobi, "--bootstrap", a.addr)
    yield {"nakuru": nakuru, "nairobi": nairobi, "a": a, "b": b, "set_by_name": set_by_name, "tmp": tmp}
    for d in (b, a):
        d.stop()


def _by_name(cli: Cli, *args: str) -> dict:
    return {lab["name"]: lab for lab in cli.json("labs", *args)["labs"]}


def test_a_town_name_is_resolved_offline_and_shown_and_unknown_processes_are_flagged(two_labs):
    said = two_labs["set_by_name"].stderr.decode()
    assert "place: Nairobi (region 05, Kenya, KE) at -1.2833, 36.8167, population" in said
    assert "warning: 'basket weaving' is not in the process vocabulary: kept, shown as an unknown process" in said
    mine = two_labs["nairobi"].json("lab")
    assert mine["place"] == "Nairobi" and mine["precision_km"] == 10
    assert mine["processes"] == ["laser-cutting"] and mine["unknown_processes"] == ["basket weaving"]
    shown = two_labs["nairobi"].out("lab")
    assert "basket weaving (unknown process)" in shown and "rounded to 10 km before signing" in shown


def test_a_profile_set_on_one_daemon_shows_on_the_other_and_so_does_a_change(two_labs):
    nakuru, nairobi = two_labs["nakuru"], two_labs["nairobi"]
    seen = wait_until(lambda: _by_name(nairobi).get("Fab Lab Nakuru"), timeout=60, what="Nakuru's profile on Nairobi")
    assert seen["processes"] == ["3d-printing-fdm", "welding"] and seen["bioregion"] == "Rift Valley"
    assert seen["taking_requests"] is True and seen["name_source"] == "declared" and seen["trusted"] is False
    assert seen["machines"] == [{"kind": "welder", "size": None, "notes": "MIG 200 A"}]
    near = nairobi.json("labs", "--near-me", "--radius", "200", "--process", "welding")
    assert [lab["name"] for lab in near["labs"]] == ["Fab Lab Nakuru"] and 100 < near["labs"][0]["distance_km"] < 160
    line = nairobi.out("labs", "--near-me", "--radius", "200")
    assert "Fab Lab Nakuru (unverified) (not trusted)  Nakuru" not in line  # no place set: shown as not shared
    assert "Fab Lab Nakuru (unverified) (not trusted)  place not shared, " in line and "Nairobi Makers  Nairobi, 0 km" in line
    # a change while both run arrives too (gossip, or the next sync)
    nakuru.run("lab", "set", "--taking-requests", "no")
    wait_until(lambda: _by_name(nairobi)["Fab Lab Nakuru"]["taking_requests"] is False, timeout=60,
               what="Nakuru's change on Nairobi")
    assert _by_name(nairobi)["Fab Lab Nakuru"]["processes"] == ["3d-printing-fdm", "welding"]  # the rest kept


def test_a_daemon_renewing_its_lab_record_keeps_the_profile(two_labs):
    assert two_labs["a"].said("this lab is “Fab Lab Nakuru”")
    mine = two_labs["nakuru"].json("lab")
    assert mine["name"] == "Fab Lab Nakuru" and mine["processes"] == ["3d-printing-fdm", "welding"]
    assert mine["bioregion"] == "Rift Valley" and mine["lat"] == pytest.approx(-0.31, abs=0.1)


def test_a_profile_travels_on_a_usb_stick_and_a_name_two_keys_declare_is_flagged(two_labs, tmp_path):
    nakuru = two_labs["nakuru"]
    wait_until(lambda: "Nairobi Makers" in _by_name(nakuru), timeout=60, what="Nairobi on Nakuru")
    stick = tmp_path / "stick.car"
    nakuru.run("export", "--records-only", str(stick))
    impostor = Cli(tmp_path / "impostor")  # another key, declaring Nakuru's name
    impostor.run("init", "--name", "Fab Lab Nakuru")
    impostor.run("lab", "set", "--lat", "-0.3", "--lon", "36.1", "--process", "welding")
    impostor.run("import", str(stick))
    labs = impostor.json("labs", "--near=-1.28,36.82", "--radius", "300")["labs"]
    # Nakuru's stick carries what Nakuru holds: its own profile and Nairobi's, met by sync
    assert [lab["name"] for lab in labs] == ["Nairobi Makers", "Fab Lab Nakuru", "Fab Lab Nakuru"]
    theirs = next(lab for lab in labs if lab["author"] == nakuru.json("id")["did"])
    assert theirs["processes"] == ["3d-printing-fdm", "welding"] and theirs["name_clash"] == 1
    lines = impostor.out("labs", "--process", "welding").splitlines()
    assert len(lines) == 2
    assert any(line.startswith("Fab Lab Nakuru (name also declared by 1 other lab)  ") for line in lines)  # its own
    assert any(line.startswith("Fab Lab Nakuru (unverified) (name also declared by 1 other lab) (not trusted)  ")
               for line in lines)


def test_careless_and_hostile_input_is_refused_in_one_line_and_changes_nothing(tmp_path):
    lab = Cli(tmp_path / "lab")
    lab.run("init", "--name", "Fab Lab Pune")
    assert lab.fails("labs", "--near-me") == ("error: --near-me: this lab has not shared coordinates yet "
                                              "(fabnode lab set --place TOWN, or --lat and --lon)")
    lab.run("lab", "set", "--lat", "18.52", "--lon", "73.86", "--process", "welding")
    before = lab.json("lab")
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"processes": [f"process {i}" for i in range(10_000)]}))
    cases = [  # each bound's own cases are in test_lab_profiles.py; these go through the command
        (["--lat", "91", "--lon", "0"], "error: latitude 91.0 is out of range (-90 to 90 degrees)"),
        (["--lat", "10", "--lon", "10", "--precision-km", "0.01"], "error: precision 0.01 km is absurd"),
        (["--from-json", str(many)], "error: processes has 10000 entries (at most 64)"),
        (["--place", "Santiago"], "error: 9 places are called 'Santiago': Santiago (region 12, Chile, CL)"),
        (["--place", "Nakuru"], "error: found the place Nakuru (region 39, Kenya, KE) at -0.3072, 36.0722, "
                                "population 570,674: confirm it with --yes, or give --lat and --lon"),
    ]
    cases.append(([], "error: lab set: nothing to change"))  # not a new record saying the same
    for args, says in cases:
        assert lab.fails("lab", "set", *args).startswith(says), (args, says)
    assert lab.json("lab") == before


def test_the_labs_page_draws_the_map_and_the_table_in_a_browser(two_labs, browser):
    nairobi, b = two_labs["nairobi"], two_labs["b"]
    wait_until(lambda: "Fab Lab Nakuru" in _by_name(nairobi), timeout=60, what="Nakuru on Nairobi")
    base = "http://" + json.loads((nairobi.home / "daemon.json").read_text())["http"]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{base}/designs", timeout=15_000)
    page.click("#nav-labs")
    page.wait_for_selector("#labs-map")
    assert page.locator("#labs-map path.land").get_attribute("d").count("M") > 100  # the world, from the package
    dots = page.locator("#labs-map circle")
    assert dots.count() == 2 and page.locator("#labs-map circle.own").count() == 1
    box = page.locator("#labs-map").bounding_box()
    own = page.locator("#labs-map circle.own").bounding_box()
    # equirectangular: Nairobi (36.8 E, 1.3 S) sits right of the middle, just below the equator
    assert 0.58 < (own["x"] - box["x"]) / box["width"] < 0.62 and 0.49 < (own["y"] - box["y"]) / box["height"] < 0.52
    rows = page.locator("#labs tr[data-author]")
    assert rows.count() == 2
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "Nairobi Makers" in first and "this lab" in first and "basket weaving (unknown process)" in first
    assert "Fab Lab Nakuru (unverified)" in second and "not trusted" in second and "welding" in second
    page.goto(f"{base}/labs?process=laser%20cutter&lang=sw", timeout=15_000)
    assert page.locator("h1").inner_text() == "Maabara" and page.locator("#labs tr[data-author]").count() == 1
    assert page.evaluate("() => performance.getEntriesByType('resource').filter(e => !e.name.startsWith(location.origin)).length") == 0
    page.close()


def test_on_a_terminal_the_operator_confirms_the_place_found(tmp_path):
    lab = Cli(tmp_path / "lab")
    lab.run("init", "--name", "Fab Lab Nakuru")
    code, shown = run_on_terminal(lab, "lab", "set", "--place", "Nakuru", "--process", "welding", answer=b"n\n")
    assert code == 1 and b"place: Nakuru (region 39, Kenya, KE) at -0.3072, 36.0722" in shown
    assert b"share this place, rounded? [y/N]" in shown and b"not confirmed: nothing published" in shown
    assert lab.json("lab")["processes"] == []
    code, shown = run_on_terminal(lab, "lab", "set", "--place", "Nakuru", "--process", "welding", answer=b"y\n")
    assert code == 0, shown
    mine = lab.json("lab")
    assert mine["place"] == "Nakuru" and mine["processes"] == ["welding"] and abs(mine["lat"] + 0.3) < 0.1
