"""docs/mappings.md's examples are `cs-relay mappings check`'s real output: each TOML
block that names its file on its first line (`# mappings.toml`) is written out, each
console block `$ cs-relay mappings check FILE` followed by output is run, and the
output must be the block's, line for line."""

from __future__ import annotations

import re
from pathlib import Path

from streams.cli.commands import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "mappings.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def examples(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The named TOML files, and each (file, printed output) of a console block."""
    files, runs = {}, []
    for language, body in BLOCK.findall(text):
        first, _, rest = body.partition("\n")
        if language == "toml" and re.fullmatch(r"# \S+\.toml", first):
            files[first[2:]] = body
        elif language == "console" and first.startswith("$ cs-relay mappings check ") and rest.strip():
            runs.append((first.split()[-1], rest))
    return files, runs


def test_the_docs_examples_print_what_the_docs_say(tmp_path, monkeypatch, capsys):
    files, runs = examples(DOC.read_text())
    assert {"mappings.toml", "aggregate.toml"} <= files.keys() and len(runs) >= 2
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    for name, documented in runs:
        assert name in files, f"docs/mappings.md runs {name}, which no TOML block names"
        capsys.readouterr()
        assert main(["mappings", "check", name]) == 0
        assert capsys.readouterr().out.splitlines() == documented.splitlines(), name


def test_an_aggregated_call_says_which_window_counts_it_and_what_its_close_sends(tmp_path, capsys):
    path = tmp_path / "m.toml"
    path.write_text('[clientsuccess]\naggregate = "15m"\n')
    assert main(["mappings", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "nothing" not in out
    assert (
        '  clientsuccess       counted in the 15m window of "Signed Up" (adds value 2); sent at the window\'s '
        "close as POST /collector/1.0.0/projects/demo-source/events/Signed%20Up value=(the window's sum)\n"
    ) in out
    assert '  [clientsuccess] aggregate "15m"\n' in out
