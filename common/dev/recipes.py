"""The recipe checks every paper's ``tests/test_recipes.py`` runs on its ``train.py`` and its
shipped configs (``configs/*.yaml``), written once; what differs between the papers is data
in :class:`RecipeChecks`.

What is checked: the config folder holds exactly the listed files; each recipe file holds
only listed options, each with its listed value; ``--config FILE --root R`` resolves to the
recipe with every option accounted for; the option layering (built-in defaults < smoke file
< ``--config`` < flags, the smoke file only when neither a dataset root nor ``--config`` is
given, so no smoke value leaks into a real run); and a real tiny run of ``train.py`` saving a
config that says what the file says (the only differences: the tiny overrides given as
flags). A paper's own checks (its official command lines, network files) stay in its test
file and use :meth:`RecipeChecks.resolve`.

A test file that imports this module calls ``pytest.register_assert_rewrite(
"common.dev.recipes")`` first, so that a failing check shows the values it compared.
"""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.dev.testing import QUIET_ENV, as_flags, run_script

__all__ = ["RecipeChecks", "COMMAND", "UNSAVED"]

# Options about the command itself, and the ones a run does not save in its config.yaml.
COMMAND = frozenset({"output", "resume", "root"})
UNSAVED = frozenset({"config", "verbose"})


@dataclass(frozen=True)
class RecipeChecks:
    """One paper's ``train.py``, its configs and the values they stand for.

    ``parse_args``: argv -> the namespace train.py runs with. ``recipes``: recipe file name
    -> every option value it stands for (the official values under this repository's option
    names, with the differences kept on purpose). ``default``: the recipe file that a bare
    ``--root`` trains and that the smoke file is layered on. ``smoke_file`` / ``smoke``: the
    smoke config and every value it sets. ``execution``: the options that change how a run
    executes, not what it computes. ``root``: a dataset root for the command lines.
    ``overrides``: option -> value, each unlike the smoke and the default recipe value, that
    must stay on top of every layer. ``cheap`` / ``smoke_cheap``: the flags that cut a real
    run of a recipe file / of the smoke run to seconds. ``saved_config``: where a run saves
    its options, relative to ``--output``."""
    script: Path
    parse_args: Callable
    recipes: dict
    default: str
    smoke_file: str
    smoke: dict
    execution: dict
    root: str
    overrides: dict
    cheap: dict
    smoke_cheap: dict
    saved_config: str = "config.yaml"

    @property
    def configs(self):
        return Path(self.script).parent / "configs"

    def parse(self, *argv, output="run"):
        return self.parse_args(["--output", str(output), *map(str, argv)])

    def resolve(self, *argv, output="run"):
        """The options train.py would run with (as it saves them in config.yaml)."""
        return {k: v for k, v in vars(self.parse(*argv, output=output)).items()
                if k not in UNSAVED}

    def in_file(self, name):
        return yaml.safe_load((self.configs / name).read_text())

    def check_shipped(self, *others):
        """The config folder holds the recipe files, the smoke file and ``others``."""
        shipped = sorted(p.name for p in self.configs.glob("*.yaml"))
        assert shipped == sorted([*self.recipes, self.smoke_file, *others])

    def check_file(self, name):
        """Recipe file ``name`` holds only listed options, each with its listed value."""
        listed = {**self.recipes[name], **self.execution, "root": None}
        in_file = self.in_file(name)
        assert set(in_file) - set(listed) == set(), "a key this test does not list"
        for key, value in in_file.items():
            assert value == listed[key], (name, key, value, listed[key])

    def check_differences(self, name, official, differences):
        """Recipe file ``name`` differs from the ``official`` values exactly in
        ``differences`` (option -> (official value, value here))."""
        recipe = self.recipes[name]
        assert {k for k in official if official[k] != recipe[k]} == set(differences)
        for key, (official_value, here) in differences.items():
            assert (official[key], recipe[key]) == (official_value, here), key

    def check_resolves(self, name, *argv, expected=None):
        """``--config NAME --root ROOT argv...`` resolves to the recipe of ``name`` (updated
        by ``expected``): every option is a recipe value, an execution choice or about the
        command. Returns the parsed namespace, for the paper's own checks."""
        args = self.parse("--config", self.configs / name, "--root", self.root, *argv)
        resolved = {k: v for k, v in vars(args).items() if k not in UNSAVED}
        want = {**self.recipes[name], **self.execution, "root": self.root, **(expected or {})}
        assert set(resolved) == set(want) | COMMAND, "an option this test does not list"
        for key, value in want.items():
            assert resolved[key] == value, (name, key, resolved[key], value)
        return args

    def check_smoke_layering(self, tmp_path):
        """Built-in defaults < --config < flags; the smoke file sits between the defaults and
        the flags only when neither a dataset root nor --config is given."""
        default = self.recipes[self.default]
        smoke, with_root = self.resolve(), self.resolve("--root", self.root)
        assert {k: smoke[k] for k in self.smoke} == self.smoke
        # what the smoke file leaves alone is the default recipe's
        assert {k: smoke[k] for k in default if k not in self.smoke} == {
            k: v for k, v in default.items() if k not in self.smoke}
        for key, value in self.overrides.items():      # else an override proves nothing
            assert value not in (smoke[key], with_root[key]), key
        # a root or a recipe file: its values, no smoke value leaks in
        layers = [((), smoke), (("--root", self.root),
                                {**default, **self.execution, "root": self.root})]
        layers += [(("--config", self.configs / name),
                    {**recipe, **self.execution, "root": None})
                   for name, recipe in self.recipes.items()]
        for argv, want in layers:
            assert set(self.smoke) <= set(want), argv
            args = self.resolve(*argv)
            assert {k: args[k] for k in want} == want, argv
            # explicit flags stay on top of every layer
            for key, value in self.overrides.items():
                assert self.resolve(*argv, *as_flags({key: value})) == {**args, key: value}, (
                    argv, key)
        # a partial config file: the rest is the default recipe, never the smoke run, whether
        # or not it gives a dataset root
        partial = tmp_path / "partial.yaml"
        partial.write_text(yaml.safe_dump(self.overrides))
        assert self.resolve("--config", partial) == {**with_root, **self.overrides,
                                                     "root": None}
        partial.write_text(yaml.safe_dump({"root": self.root}))
        assert self.resolve("--config", partial) == with_root

    def check_real_run(self, name, tmp_path):
        """A real run of config ``name`` (the smoke file: train.py given neither --root nor
        --config), cut short by the cheap flags, saves a config that says what the file and
        its recipe say but for those flags. Returns the run's output folder."""
        out = tmp_path / "run"
        if name == self.smoke_file:
            overrides, argv = self.smoke_cheap, []
            expected = {**self.recipes[self.default], **self.execution, **self.smoke}
        else:
            overrides, argv = self.cheap, ["--config", self.configs / name]
            expected = {**self.recipes[name], **self.execution, "root": None}
        run_script(self.script, *argv, "--output", out, *as_flags(overrides), env=QUIET_ENV)
        saved = yaml.safe_load((out / self.saved_config).read_text())
        assert set(saved) == set(expected) | COMMAND
        for source in (self.in_file(name), expected):
            for key, value in source.items():
                assert saved[key] == overrides.get(key, value), (name, key, saved[key])
        return out
