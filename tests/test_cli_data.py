"""`factorgym import`, `factorgym validate`, `factorgym data list` end to end on the shared files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factorgym.cli import main
from factorgym.data_layer.store import CandleStore

BF = "file:bitfinex_btcusd_1h"
BS = "file:bitstamp_btc_eth_ltc_usd_1d"


@pytest.fixture
def store_dir(tmp_path, shared_data, capsys) -> Path:
    root = tmp_path / "store"
    assert main(["import", str(shared_data / "bitfinex_btcusd_1h.csv"), "--store", str(root)]) == 0
    assert main(["import", str(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv"), "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "17583 new bar(s)" in out and "wide layout, 1d bars, 3 symbol(s)" in out
    return root


def test_import_then_list_in_a_subprocess(store_dir, subprocess_env):
    out = subprocess.run([sys.executable, "-m", "factorgym", "data", "list", "--store", str(store_dir)],
                         env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["source", "symbol", "timeframe", "rows", "first", "last", "gaps"]
    assert lines[1].split() == [BF, "BTC/USD", "1h", "17583", "2017-07-01", "11:00", "2019-07-04", "01:00", "0"]
    assert lines[3].split() == [BS, "ETH/USD", "1d", "800", "2017-11-09", "00:00", "2020-01-17", "00:00", "12"]
    assert "4 series" in lines[-1]


def test_store_contents(store_dir, capsys):
    store = CandleStore(store_dir)
    eth = store.read(BS, "ETH/USD", "1d")
    assert eth["timestamp"].iloc[0] == 1_510_185_600_000 and (~eth["tradable"]).sum() == 12
    assert store.read(BF, "BTC/USD", "1h")["timestamp"].iloc[0] == 1_498_906_800_000
    assert main(["data", "list", "--store", str(store_dir), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["symbol"], r["rows"], r["gaps"], r["marked"]) for r in rows] == [
        ("BTC/USD", 17583, 0, 0), ("BTC/USD", 1877, 12, 12), ("ETH/USD", 800, 12, 12), ("LTC/USD", 937, 12, 12)]


def test_validate_passes_then_fails_on_a_corrupted_series(store_dir, capsys):
    assert main(["validate", "--store", str(store_dir)]) == 0
    assert "4 of 4 series passed" in capsys.readouterr().out
    assert main(["validate", "--store", str(store_dir), "--symbol", "ltcusd"]) == 0
    assert "1 of 1 series passed" in capsys.readouterr().out
    bad = pd.DataFrame({"timestamp": [1_600_000_000_000 // 3_600_000 * 3_600_000], "open": [10.0], "high": [9.0],
                        "low": [11.0], "close": [10.0], "volume": [1.0]})
    CandleStore(store_dir).write("broken", "XRP/USD", "1h", bad)  # the store itself does not validate
    assert main(["validate", "--store", str(store_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL broken XRP/USD 1h: row 0" in out and "high >= low" in out and "4 of 5 series passed, 1 FAILED" in out


def test_import_options_and_errors(tmp_path, shared_data, capsys):
    root = tmp_path / "s"
    assert main(["import", str(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv"), "--store", str(root),
                 "--symbol", "ETH/USD", "--gap-policy", "drop", "--source", "bitstamp-csv"]) == 0
    entries = CandleStore(root).entries()
    assert [(e.source, e.symbol, e.rows, e.n_gaps) for e in entries] == [("bitstamp-csv", "ETH/USD", 788, 12)]
    assert main(["import", str(shared_data / "bitfinex_btcusd_1h.csv"), "--store", str(tmp_path / "dry"),
                 "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out and not (tmp_path / "dry").exists()
    page = tmp_path / "page.csv"
    page.write_text("<html><body>Too many requests</body></html>")
    assert main(["import", str(page), "--store", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("factorgym import: error: page.csv: this is an HTML") and "\n" not in err
    # explicit mapping options reach the loader
    f = tmp_path / "x.csv"
    f.write_text("when;o;h;l;c;qty\n1704067200;1,0;2,0;0,5;1,5;3\n1704070800;1,5;2,0;1,0;1,2;4\n")
    assert main(["import", str(f), "--store", str(root), "--symbol", "DOGE/USDT", "--time-col", "when",
                 "--volume-col", "qty", "--sep", ";", "--timestamp-unit", "s", "--timeframe", "1h"]) == 0
    got = CandleStore(root).read("file:x", "DOGE/USDT", "1h")
    np.testing.assert_array_equal(got["close"], [1.5, 1.2])


def test_every_option_has_help():
    import argparse

    from factorgym.cli import build_parser

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name in ("import", "validate", "data", "list"):
                        yield from walk(sub)
            elif action.dest != "help":
                yield action

    missing = [a.option_strings or a.dest for a in walk(build_parser()) if not a.help]
    assert missing == []


def test_help_explains_every_option(capsys):
    for cmd in (["import", "--help"], ["validate", "--help"], ["data", "list", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        text = capsys.readouterr().out
        assert "--store" in text
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = capsys.readouterr().out
    for opt in ("--time-col", "--open-col", "--volume-col", "--symbol-col", "--layout", "--timestamp-unit", "--tz",
                "--skiprows", "--sep", "--gap-policy", "--quote", "--date-format"):
        assert opt in text
