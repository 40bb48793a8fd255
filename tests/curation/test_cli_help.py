"""Help: every option of every command explains itself and names its default; examples; --version."""

import argparse

import pytest

from curation.cli import COMMANDS, HelpFormatter, build_parser, main, version


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: str = "curate"):
    """(path, parser, action) for every argument of the parser and of every subcommand below it."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        yield path, parser, action
    for name, sub in _subparsers(parser).items():
        yield from _walk(sub, f"{path} {name}")


def _meaningful_default(action: argparse.Action) -> bool:
    d = action.default
    return bool(action.option_strings) and d is not None and d is not False and d is not argparse.SUPPRESS and d != []


def _problems(parser: argparse.ArgumentParser) -> tuple[list[str], list[str], int]:
    """(options without help, options whose rendered help does not name their default, arguments walked)."""
    missing, no_default, walked = [], [], 0
    for path, sub, action in _walk(parser):
        walked += 1
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
            missing.append(f"{path} {name}")
            continue
        rendered = sub._get_formatter()._expand_help(action)
        if _meaningful_default(action) and "default" not in rendered.lower():
            no_default.append(f"{path} {name}: {rendered}")
    return missing, no_default, walked


def test_every_option_of_every_command_has_help_naming_its_default():
    parser = build_parser([], every_command=True)
    assert set(_subparsers(parser)) == set(COMMANDS)
    missing, no_default, walked = _problems(parser)
    assert walked > 60, f"walked only {walked} arguments: the tree walk is broken"
    assert not missing, "options without help text:\n" + "\n".join(missing)
    assert not no_default, "options whose help does not name their default:\n" + "\n".join(no_default)


def test_the_walk_finds_an_option_without_help_deep_in_the_tree():
    parser = argparse.ArgumentParser(prog="curate")
    sub = parser.add_subparsers(dest="command").add_parser("x", formatter_class=argparse.HelpFormatter)
    sub.add_argument("--format", default="qwen-vl")
    sub.add_argument("--size", type=int, default=3, help="pixels")
    missing, no_default, walked = _problems(parser)
    assert walked == 2
    assert missing == ["curate x --format"]
    assert no_default == ["curate x --size: pixels"]


def test_help_formatter_appends_a_default_only_when_the_text_lacks_one():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--size", type=int, default=32, help="pixels")
    p.add_argument("--named", default="x", help="named already (default x)")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--none", default=None, help="optional")
    text = p.format_help()
    assert "pixels (default 32)" in text
    assert "named already (default x)" in text and "(default x) (default" not in text
    assert "a switch\n" in text and "optional\n" in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: curate {command}" in out
    examples = out.split("examples:", 1)
    assert len(examples) == 2, f"curate {command} --help shows no examples"
    assert f"curate {command}" in examples[1]


def test_top_level_help_lists_every_command_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "examples:" in out and "--version" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"curate {version()}"
    assert out.split()[1][0].isdigit()


def test_every_command_and_option_the_readme_names_exists():
    """The README's command table and the `curate ...` lines of the README and docs/ name only commands and
    options the CLI has (exactly: argparse would also take an abbreviation)."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    readme = re.sub(r"\\\n\s*", " ", readme)  # shell line continuations
    subs = _subparsers(build_parser([], every_command=True))
    options = {name: {o for a in sub._actions for o in a.option_strings} for name, sub in subs.items()}
    checked, unknown = 0, []
    for line in readme.splitlines():
        for m in re.finditer(r"`curate ([a-z]+)\b([^`]*)`", line):
            cmd, rest = m.group(1), m.group(2)
            if cmd not in subs:
                unknown.append(f"curate {cmd}")
                continue
            # a command table row names its command's options anywhere in the row (but in the spans of other
            # commands it names); other inline code, only in its own span
            if line.startswith("| `curate ") and m.start() == 2:
                scope = re.sub(r"`curate [a-z]+\b[^`]*`", "", line[m.end():]) + rest
            else:
                scope = rest
            for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", scope):
                checked += 1
                if opt not in options[cmd] and opt not in ("--help", "--version", "--verbose"):
                    unknown.append(f"curate {cmd} {opt}")
        code = re.match(r"^\s*(?:[A-Z_]+=\S+ )*curate (.*)$", line)
        if code and not line.lstrip().startswith("|"):
            argv = shlex.split(code.group(1).split("  #")[0])
            if argv and argv[0] in subs:
                checked += 1
                flags = [o.strip("[]").split("=")[0] for o in argv if o.strip("[").startswith("--")]
                unknown += [f"curate {argv[0]} {o}" for o in flags if o not in options[argv[0]]]
                if any(a.startswith("[") for a in argv):
                    continue  # a synopsis: its options are checked, it is not a command line
                try:
                    build_parser(argv).parse_args(argv)
                except SystemExit:
                    unknown.append(line.strip())
    assert checked >= 40 and unknown == [], unknown
