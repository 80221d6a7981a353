"""The one command-line parser of every entry script, the numeric flag types it requires, and
:func:`run_cli`, which runs an entry script's ``main``.

:class:`Parser` reads its defaults from YAML (precedence, lowest to highest: the flags' own
defaults, ``default_config``, the file given with ``--config``, the command line). YAML keys
are flat and name argument dests (``learning-rate`` and ``learning_rate`` both work). What a
user gets wrong is one ``error: ...`` line and exit status 2 (through
:func:`common.cli.run_cli`):

* an unknown flag or config key (with the closest known one as a hint);
* an abbreviated flag: ``--source`` never silently means ``--source-augmentations``;
* a number out of its range: every ``int``/``float`` flag must be declared with one of the
  bounded types below (``--batch-size 0`` or ``--alpha nan`` never reach the code).

Official spellings of flags are plain extra option strings (``add_argument("--out-dir",
"-o", "--outdir")``); :meth:`Parser.add_alias` adds one that is hidden from ``--help``.
"""
import argparse
import difflib
import math
import sys

from common.config import load_config
from common.errors import ENVIRONMENT_ERRNOS, Interrupted, UserError, describe_os_error
from common.terminal import interrupt_guard, set_verbosity

__all__ = ["run_cli", "Parser", "Bounded", "PositiveInt", "NonNegativeInt", "AnyInt",
           "PositiveFloat", "NonNegativeFloat", "FiniteFloat", "Fraction", "numeric_actions"]

# Options about the command itself, not about what it computes: not settable from a config file,
# not saved with a run.
TERMINAL_OPTIONS = ("config", "verbose", argparse.SUPPRESS)
# Flags take YAML booleans; const/count actions take the YAML value as-is.
_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction,
                 argparse.BooleanOptionalAction)
_RAW_ACTIONS = (argparse._StoreConstAction, argparse._AppendConstAction, argparse._CountAction)
_UNSETTABLE = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


class Bounded:
    """A flag type: ``int`` or ``float`` within ``[low, high]`` (``low_open``: ``low``
    itself excluded); floats must be finite. Use as ``type=PositiveInt`` or
    ``type=Bounded(float, 0, 1)``."""

    def __init__(self, kind, low=None, high=None, low_open=False):
        if kind not in (int, float):
            raise TypeError("Bounded takes int or float")
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.__name__ = self.describe()  # argparse names the type in its messages

    def describe(self):
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            return f"{noun} in {left}{self.low}, {self.high}]"
        if self.low is not None:
            if self.low == 0:
                return f"{noun} > 0" if self.low_open else f"{noun} >= 0"
            return f"{noun} {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{noun} <= {self.high}"
        return noun if self.kind is int else "a finite number"

    def __call__(self, text):
        try:
            if self.kind is int:
                if isinstance(text, float) and not text.is_integer():
                    raise ValueError
                value = int(text) if not isinstance(text, str) else int(text.strip(), 10)
            else:
                value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") \
                from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        below = self.low is not None and (value <= self.low if self.low_open
                                          else value < self.low)
        above = self.high is not None and value > self.high
        if below or above:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def __repr__(self):
        return f"Bounded({self.describe()})"


PositiveInt = Bounded(int, 1)
NonNegativeInt = Bounded(int, 0)
AnyInt = Bounded(int)
PositiveFloat = Bounded(float, 0, low_open=True)
NonNegativeFloat = Bounded(float, 0)
FiniteFloat = Bounded(float)
Fraction = Bounded(float, 0, 1)


def numeric_actions(parser):
    """The parser's actions whose values are numbers (for the contract tests)."""
    return [a for a in parser._actions
            if a.type in (int, float) or isinstance(a.type, Bounded)]


class Parser(argparse.ArgumentParser):
    """ArgumentParser with YAML defaults (``--config PATH``), one-line errors, no prefix
    abbreviations and range-checked numbers.

    Example::

        p = Parser(description="train", default_config="conf/base.yaml")
        p.add_argument("--lr", type=PositiveFloat, default=1e-3)
        args = p.parse_args()       # base.yaml < --config file < CLI flags

    A training script whose defaults are the paper's recipe but which should run a small CPU
    smoke configuration when started with no arguments passes ``smoke_config`` and
    ``smoke_unless`` (option dests such as ``("root",)``): the smoke file is used as the
    lowest layer of defaults only when none of those options nor ``--config`` is given on
    the command line. ``smoke_used`` on the parser tells which case applied.
    """

    def __init__(self, *args, default_config=None, smoke_config=None, smoke_unless=(),
                 **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.default_config = default_config
        self.smoke_config = smoke_config
        self.smoke_unless = tuple(smoke_unless)
        self.smoke_used = False
        self.add_argument("--config", metavar="PATH", default=None,
                          help="YAML file of option: value pairs used as defaults; "
                               "command-line flags override it")
        self.add_argument("-v", "--verbose", action="count", default=0,
                          help="show library info messages and full warnings (-vv: debug)")

    def add_alias(self, alias, dest):
        """Accept ``alias`` (e.g. an official script's spelling) for the option stored in
        ``dest``, without listing it in ``--help``."""
        if alias in self._option_string_actions:
            raise ValueError(f"{alias} is already an option")
        for action in self._actions:
            if action.dest == dest and action.option_strings:
                self._option_string_actions[alias] = action
                return action
        raise KeyError(dest)

    def _check_types(self):
        for action in self._actions:
            if action.type in (int, float):
                raise TypeError(f"{action.option_strings or action.dest}: declare it with a "
                                "bounded type from common.cli (PositiveInt, NonNegativeFloat, "
                                "Bounded(...)), not a bare int/float")

    # ------------------------------------------------------------------ errors
    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")

    # ------------------------------------------------------------------ parsing
    def parse_args(self, args=None, namespace=None):
        self._check_types()
        argv = list(sys.argv[1:] if args is None else args)
        self._report_unknown_first(argv)
        files = [self.default_config] if self.default_config else []
        cli_config = self._peek_config(argv)
        self.smoke_used = bool(self.smoke_config) and not cli_config and not any(
            self._given(dest, argv) for dest in self.smoke_unless)
        if self.smoke_used:
            files.append(self.smoke_config)
        if cli_config:
            files.append(cli_config)
        overrides = {}
        for path in files:
            overrides.update(self._read_overrides(path))
        # Every action sharing a dest (e.g. --flag/--no-flag) gets the new default,
        # since argparse takes the namespace default from the first of them.
        touched = [a for a in self._actions if a.dest in overrides]
        saved = [(a, a.default, a.required) for a in touched]
        try:
            for action in touched:
                action.default = overrides[action.dest]
                action.required = False  # the file supplied it
            ns = super().parse_args(argv, namespace)
        finally:
            for action, default, required in saved:
                action.default, action.required = default, required
        if isinstance(ns.verbose, int):  # not when a caller parses into a namespace of markers
            set_verbosity(ns.verbose)
        return ns

    def _report_unknown_first(self, argv):
        """An unknown flag is the first thing to report, before a missing required option
        (argparse checks the required ones first)."""
        relaxed = [a for a in self._actions if a.required]
        for action in relaxed:
            action.required = False
        try:
            _, extras = super().parse_known_args(argv)
        except UserError:
            return  # a bad value: the real parse reports it
        finally:
            for action in relaxed:
                action.required = True
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")

    def _given(self, dest, argv):
        """True when an option storing ``dest`` (any spelling, aliases included) is on the
        command line."""
        spellings = [s for s, a in self._option_string_actions.items() if a.dest == dest]
        return any(token == s or token.startswith(s + "=") for token in argv
                   for s in spellings)

    def _peek_config(self, argv):
        """The --config value, found without parsing anything else."""
        peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        peek.add_argument("--config", default=None)
        try:
            known, _ = peek.parse_known_args(argv)
        except SystemExit:  # e.g. "--config" with no value: the real parse reports it
            return None
        return known.config

    def _configurable(self):
        """dest -> action for every option a YAML file may set."""
        out = {}
        for action in self._actions:
            if isinstance(action, _UNSETTABLE) or action.dest in TERMINAL_OPTIONS:
                continue
            out[action.dest] = action
        return out

    def _read_overrides(self, path):
        try:
            data = load_config(path)
        except UserError as exc:
            self.error(str(exc))
        options = self._configurable()
        result = {}
        for key, value in data.items():
            dest = str(key).replace("-", "_")
            action = options.get(dest)
            if action is None:
                hint = difflib.get_close_matches(dest, list(options), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(f"config file {path}: unknown key {key!r}{extra}")
            if not action.option_strings:
                self.error(f"config file {path}: {key!r} is a positional argument; "
                           f"give it on the command line")
            result[dest] = self._convert(path, key, action, value)
        return result

    def _convert(self, path, key, action, value):
        """Coerce a YAML value the way argparse would coerce the same text."""
        def fail(why):
            self.error(f"config file {path}: key {key!r}: {why}")

        if isinstance(action, _FLAG_ACTIONS):
            if not isinstance(value, bool):
                fail(f"expected true or false, got {value!r}")
            return value
        if value is None:
            return None
        if isinstance(action, _RAW_ACTIONS):
            return value
        if action.nargs not in (None, argparse.OPTIONAL):
            if not isinstance(value, list):
                value = [value] if action.nargs in ("*", "+") else value
            if not isinstance(value, list):
                fail(f"expected a list of {action.nargs} values")
            if isinstance(action.nargs, int) and len(value) != action.nargs:
                fail(f"expected {action.nargs} values, got {len(value)}")
            if action.nargs == "+" and not value:
                fail("expected at least one value")
            return [self._convert_one(fail, action, v) for v in value]
        if isinstance(action, argparse._AppendAction):
            value = value if isinstance(value, list) else [value]
            return [self._convert_one(fail, action, v) for v in value]
        return self._convert_one(fail, action, value)

    @staticmethod
    def _convert_one(fail, action, value):
        # No type means str, as on the command line ("name: 7" gives "7").
        kind = action.type or str
        number = kind.kind if isinstance(kind, Bounded) else kind
        if isinstance(value, (dict, list)):
            fail(f"expected a single value, got {type(value).__name__}")
        if isinstance(value, bool) and number in (int, float):
            fail(f"expected {number.__name__}, got {value!r}")
        if number is int and isinstance(value, float):
            if not value.is_integer():
                fail(f"expected an integer, got {value!r}")
            value = int(value)
        try:
            # Numbers keep YAML's value exactly; anything else sees CLI-like text.
            value = kind(value if isinstance(value, str) or number in (int, float)
                         else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            fail(f"invalid value {value!r} ({exc})")
        if action.choices is not None and value not in action.choices:
            fail(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
        return value


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command-line program.

    ``UserError`` becomes ``error: <message>`` on stderr and exit status 2, as does an
    OS error of the user's environment (full disk, read-only or unwritable folder); Ctrl-C
    becomes one line and exit status 130 (the first Ctrl-C lets a training loop finish its
    step and write a checkpoint, see :mod:`common.terminal`). Anything else is a bug and
    keeps its traceback.
    """
    set_verbosity(0)
    try:
        with interrupt_guard():
            status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.exit(0)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
