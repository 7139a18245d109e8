"""`cs-relay mappings check FILE`: problems with file:line and key (exit 1), else what each
destination would do with the sample calls, through the real step and decide functions."""

from __future__ import annotations

from streams.cli.commands import main

EXAMPLE = """\
[clientsuccess]
allow = ["Order *", "Report Exported"]
deny = ["Order Debug*"]
rename = { "Order Completed" = "Purchase" }
pages = "single"
screens = "off"
value_property = "revenue"

[customersuccessbox]
trait_renames = { "plan_name" = "plan" }
screens = "as_event"

[webhook]
pages = "off"
"""


def blocks(output: str) -> dict[str, dict[str, str]]:
    """The sample table: call -> destination -> outcome."""
    out: dict[str, dict[str, str]] = {}
    call = None
    for line in output.split("\n\n", 2)[-1].splitlines():
        if not line.strip():
            continue
        if line.startswith("  "):
            key, outcome = line.strip().split(None, 1)
            out[call][key] = outcome
        else:
            call = line
            out[call] = {}
    return out


def test_a_valid_file_shows_what_each_destination_does_with_the_samples(tmp_path, capsys):
    path = tmp_path / "m.toml"
    path.write_text(EXAMPLE)
    assert main(["mappings", "check", str(path)]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f'{path}: valid\n  [clientsuccess] allow ["Order *", "Report Exported"], ')
    table = blocks(output)
    assert table['track "Order Completed"'] == {
        "clientsuccess": "sent as POST /collector/1.0.0/projects/demo-source/events/Purchase value=42.5",
        "customersuccessbox": 'sent as POST /api_js/v1_1/track event="Order Completed"',
        "webhook": 'sent as POST (its URL) type="track" event="Order Completed"',
    }
    assert table['track "Order DebugExample"']["clientsuccess"] == (
        "skipped ('Order DebugExample' matches the deny pattern 'Order Debug*' of the mapping file)"
    )
    assert table['track "Signed Up"']["clientsuccess"] == (
        "skipped ('Signed Up' matches no allow pattern of the mapping file)"
    )
    assert table['page "Pricing"'] == {
        "clientsuccess": "skipped ('Page Viewed' matches no allow pattern of the mapping file)",
        "customersuccessbox": 'sent as POST /api_js/v1_1/page name="Pricing"',
        "webhook": 'skipped (page calls are off in the mapping file: pages = "off")',
    }
    assert table['screen "Home"'] == {
        "clientsuccess": 'skipped (screen calls are off in the mapping file: screens = "off")',
        "customersuccessbox": 'sent as POST /api_js/v1_1/track event="Viewed Home Screen"',
        "webhook": 'sent as POST (its URL) type="screen" name="Home"',
    }
    assert table["identify (traits: name, email, plan_name)"]["customersuccessbox"] == (
        "sent as POST /api_js/v1_1/identify traits: name, email, plan"
    )


def test_without_tables_every_destination_behaves_as_today(tmp_path, capsys):
    path = tmp_path / "empty.toml"
    path.write_text("# nothing\n")
    assert main(["mappings", "check", str(path)]) == 0
    table = blocks(capsys.readouterr().out)
    assert table['page "Pricing"']["clientsuccess"] == (
        "sent as POST /collector/1.0.0/projects/demo-source/events/Viewed%20Pricing%20Page value=1"
    )
    assert table['screen "Home"']["clientsuccess"] == "skipped (ClientSuccess does not take screen calls)"
    assert table['screen "Home"']["webhook"].startswith("sent as")


def test_an_invalid_file_exits_1_naming_each_problem(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[clientsuccess]\npages = "one"\n\n[webhook]\nvalue_property = "x"\n')
    assert main(["mappings", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f'error: {path}:2: [clientsuccess] pages: expected "per_page", "single" or "off", not \'one\'',
        f"error: {path}:5: [webhook] value_property: unknown option (accepted: allow, deny, rename, pages, "
        "screens, aggregate, consent, trait_renames)",
        f"2 problem(s) in {path}",
    ]


def test_a_missing_file_exits_1(tmp_path, capsys):
    assert main(["mappings", "check", str(tmp_path / "none.toml")]) == 1
    assert "cannot read the mapping file" in capsys.readouterr().err
